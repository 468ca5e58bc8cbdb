"""The compare page: two versions side by side, for every role that sees model pages."""
import re

import pytest
from django.urls import reverse
from django.utils.html import escape

from modelhub.models import ModelVersion

from .test_pages import _second_version, login

ROLES = ("viewer", "analyst", "engineer", "admin")


def _copy_of(version: ModelVersion, *, minor: int, **metrics) -> ModelVersion:
    """A retired sibling of `version` with some metrics changed: a second row to compare with."""
    copy = ModelVersion.objects.get(pk=version.pk)
    copy.pk, copy.minor, copy.status, copy.deployed_at = None, minor, ModelVersion.Status.RETIRED, None
    copy.metrics = {**version.metrics, **metrics}
    copy.save()
    return copy


def _cell(content: bytes, metric: str, column: str) -> str:
    """The text of one metric's cell in column "a" or "b"."""
    row = re.search(rf'<tr data-metric="{metric}">(.*?)</tr>', content.decode(), re.S).group(1)
    return re.search(rf'data-version="{column}">(.*?)</td>', row, re.S).group(1)


def compare_url(a, b):
    return f"{reverse('model_compare')}?a={a}&b={b}"


def test_each_role_that_sees_models_sees_the_comparison(client, ready, users):
    _copy_of(ready, minor=7, accuracy=0.6123)
    for name in ROLES:
        client.logout()
        login(client, users[name])
        page = client.get(compare_url("1.0", "1.7"))
        assert page.status_code == 200, name
        assert b"Model v1.0 vs v1.7" in page.content


def test_strangers_are_sent_to_log_in_and_a_user_without_a_role_is_refused(client, ready, users):
    response = client.get(compare_url("1.0", "1.0"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    login(client, users["nobody"])
    assert client.get(compare_url("1.0", "1.0")).status_code == 403


def test_each_column_shows_its_own_versions_metrics_and_the_difference(client, ready, users):
    _copy_of(ready, minor=7, accuracy=0.6123, auc=0.7001)
    login(client, users["viewer"])
    content = client.get(compare_url("1.0", "1.7")).content
    assert f"{ready.metrics['accuracy']:.4f}" in _cell(content, "accuracy", "a")
    assert "0.6123" in _cell(content, "accuracy", "b") and "0.6123" not in _cell(content, "accuracy", "a")
    assert "0.7001" in _cell(content, "auc", "b")
    row = re.search(r'<tr data-metric="accuracy">(.*?)</tr>', content.decode(), re.S).group(1)
    assert f"{0.6123 - ready.metrics['accuracy']:.4f}" in row  # b − a
    tn, fp = ready.metrics["confusion_matrix"][0]
    assert f'<td class="num">{tn}</td><td class="num">{fp}</td>' in content.decode()
    top = next(iter(ready.metrics["feature_importance"]))
    assert f"<code>{top}</code>" in content.decode()


def test_calibration_shows_only_when_a_version_has_it(client, ready, users):
    for minor in (6, 7):  # versions from before calibration existed
        copy = _copy_of(ready, minor=minor)
        copy.metrics.pop("calibration", None)
        copy.save()
    login(client, users["viewer"])
    assert b"<h2>Calibration</h2>" not in client.get(compare_url("1.6", "1.7")).content
    _copy_of(ready, minor=8, calibration={"brier_before": 0.1811, "brier_after": 0.1502, "method": "sigmoid"})
    content = client.get(compare_url("1.7", "1.8")).content
    assert b"<h2>Calibration</h2>" in content and b"0.1502" in content and b"Brier after" in content


@pytest.mark.parametrize("query, says", [
    ("?a=1.0&b=1.0", b"chosen twice"),
    ("?a=1.0&b=9.9", b"There is no version &#x27;9.9&#x27;"),
    ("?a=latest&b=1.0", b"There is no version &#x27;latest&#x27;"),
    ("?a=1.0", b"Choose two versions"),
    ("?b=", b"Choose two versions"),
])
def test_bad_choices_say_why_and_offer_the_form(client, ready, users, query, says):
    login(client, users["viewer"])
    page = client.get(reverse("model_compare") + query)
    assert page.status_code == 400
    assert says in page.content
    assert b'<select id="compare-a" name="a">' in page.content and b'<option value="1.0"' in page.content


def test_the_bare_page_is_the_form(client, ready, users):
    login(client, users["viewer"])
    page = client.get(reverse("model_compare"))
    assert page.status_code == 200 and b'name="b"' in page.content and b'class="msg error"' not in page.content


def test_a_real_retraining_compared_with_its_predecessor(client, ready, users, demo):
    """v1.1 from a real run: its gates and drift on the page, against v1.0 that had none."""
    _second_version(demo)
    v11 = ModelVersion.objects.get(major=1, minor=1)
    login(client, users["viewer"])
    page = client.get(compare_url("1.0", "1.1"))
    assert page.status_code == 200
    content = page.content.decode()
    assert f"{v11.metrics['auc']:.4f}" in _cell(page.content, "auc", "b")
    versus = v11.validation["comparison"]["auc"]
    cell = _cell(page.content, "auc", "b")
    assert f"vs live {versus['delta']:.4f}" in cell and f"[{versus['low']:.4f}, {versus['high']:.4f}]" in cell
    for gate in v11.validation["gates"]:
        assert escape(gate["label"]) in content
    assert f"{v11.drift['share']:.3f}" in content


def test_the_links_to_the_page(client, ready, users):
    _copy_of(ready, minor=7)
    login(client, users["viewer"])
    models = client.get(reverse("models")).content.decode()
    assert f'action="{reverse("model_compare")}"' in models
    assert '<option value="1.0" selected>' in models and '<option value="1.7" selected>' in models
    version_page = client.get(reverse("model_detail", args=["1.7"])).content.decode()
    assert f'href="{reverse("model_compare")}?a=1.0&amp;b=1.7"' in version_page
    assert "Compare with the live model" not in client.get(reverse("model_detail", args=["1.0"])).content.decode()
