"""One mechanism for what a process keeps between requests (clsite.memo): forget_all() empties
the served model, the tokens and the health report at once."""
from api import auth
from api.services import create_token
from clsite import memo
from modelhub import serving
from ops import health


def test_forget_all_empties_every_process_cache(ready, users, rf):
    serving.active()
    health.recent()
    _, key = create_token(user=users["viewer"])
    request = rf.post("/api/v1/predict", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert auth.bearer_user(request) == users["viewer"]
    caches = {cache.name: cache for cache in memo._ALL}
    assert {"served model", "API tokens", "health report"} <= set(caches)
    assert all(caches[name] for name in ("served model", "API tokens", "health report"))
    memo.forget_all()
    assert not any(caches[name] for name in ("served model", "API tokens", "health report"))
