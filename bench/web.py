"""Benchmark: the API and the pages over HTTP, through the web server as `make run` and
production start it (scripts/serve.sh: nginx in front of gunicorn), each beside a raw counterpart
served by the same server in the same run.

    .venv/bin/python bench/web.py [--quick] [--keep] [--duration S] [--rounds N]

A throw-away CL_HOME (SQLite, the default configuration) is initialised on demo rows 0-3,999
(model v1.0) with 500 versions in the history (bulk-created, sharing the active artifact), a
Viewer's API token (api.services.create_token) and an ML engineer's session. The server is
scripts/serve.sh itself, as scripts/run.sh starts it: Debian's nginx on a free port (its access
log to a file) buffering each request, then gunicorn's 2 sync workers on a unix socket (their
timeout and request limits), serving bench.bare:application (WSGI_APP): the site's WSGI
application with the bare view added (bench/bare.py). Every request, the static file's too, goes
through nginx to gunicorn.
wrk (Debian's) loads it from a process of its own on 127.0.0.1: 64 connections, 2 threads,
each endpoint in turn for --duration seconds, after a warm-up of every endpoint; --rounds
rounds, medians reported. Any response other than 200 counts as an error.

- POST /api/v1/predict with one row (Bearer token) beside GET /static/css/site.css (a small
  file through WhiteNoise): at least 1,000 requests/s, at least 0.35 of the static rate, p99
  under 100 ms, no errors or timeouts;
- GET / and GET /models/ (logged in, 500 versions) beside GET /bench/bare/ (a trivial template
  behind the same middleware, same session): each at least 0.4 of the bare view's rate.
Writes bench/results/web.json and its section of bench/README.md.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

from bench import common  # noqa: E402

CONNECTIONS, WRK_THREADS = 64, 2
PREDICT_MIN_RPS, PREDICT_MIN_RATIO, PREDICT_MAX_P99_MS = 1000, 0.35, 100
PAGE_MIN_RATIO = 0.4
HISTORY = 500

LUA = """
wrk.method = %(method)s
wrk.body = %(body)s
%(headers)s
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  not_ok = 0
end
function response(status, headers, body)
  if status ~= 200 then not_ok = not_ok + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("not_ok") end
  io.write(string.format('BENCH {"requests": %%d, "duration_us": %%d, "bytes": %%d, "connect": %%d, "read": %%d, "write": %%d, '
    .. '"status": %%d, "timeout": %%d, "not_200": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d, "mean_us": %%f}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, bad, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


def lua_string(text: str | None) -> str:
    """A Lua string literal (JSON's escapes are Lua's for ASCII text)."""
    return "nil" if text is None else json.dumps(text, ensure_ascii=True)


SERVE = ROOT / "scripts" / "serve.sh"


def gunicorn_command() -> list[str]:
    """The gunicorn command of scripts/serve.sh, with its defaults filled in (for the report)."""
    text = SERVE.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.strip().startswith('"$GUNICORN"'))
    line = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line.split(" &")[0]).replace('"$TIMEOUT"', "600")
    words = shlex.split(line)
    words[0], words[1] = ".venv/bin/gunicorn", "bench.bare:application"
    words = [w.replace("$SOCKET", "$CL_HOME/run/web/gunicorn.sock") for w in words]
    return words


def nginx_version() -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip().split("/")[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare() -> dict:
    from django.db import connections
    from django.test import Client

    from api.services import create_token
    from testing import builders

    from ops.repairs import repair

    demo, users = common.initialise_demo(slice(0, 4000))
    versions = common.grow_history(HISTORY)
    # The mirror files of the bulk-made versions, written once here rather than by each gunicorn
    # process at its start (which logs every one of them).
    logging.getLogger("clsite.ops").setLevel(logging.ERROR)
    repair()
    logging.getLogger("clsite.ops").setLevel(logging.NOTSET)
    _, key = create_token(user=users["viewer"], name="bench")
    client = Client()
    client.force_login(users["engineer"])
    session = client.cookies["sessionid"].value
    row = common.api_row(demo.frame.iloc[4100])
    connections.close_all()
    return {"token": key, "session": session, "row": row, "versions": versions, "demo": builders.DEMO}


def endpoints(state: dict, base: str) -> dict:
    from bench import bare

    cookie = {"Cookie": f"sessionid={state['session']}"}
    return {
        "static": ("GET", "/static/css/site.css", None, {}),
        "predict": ("POST", "/api/v1/predict", json.dumps({"rows": [state["row"]]}),
                    {"Content-Type": "application/json", "Authorization": f"Bearer {state['token']}"}),
        "bare": ("GET", "/" + bare.PATH, None, cookie),
        "overview": ("GET", "/", None, cookie),
        "models": ("GET", "/models/", None, cookie),
    }


def check(base: str, method: str, path: str, body: str | None, headers: dict) -> int:
    request = urllib.request.Request(base + path, data=body.encode() if body else None, method=method, headers=headers)
    opener = urllib.request.build_opener(NoRedirect)
    with opener.open(request, timeout=30) as response:
        return response.status


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def wrk(base: str, spec: tuple, seconds: float, folder: Path) -> dict:
    method, path, body, headers = spec
    script = folder / f"wrk-{abs(hash((method, path)))}.lua"
    header_lines = "\n".join(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items())
    script.write_text(LUA % {"method": lua_string(method), "body": lua_string(body), "headers": header_lines})
    done = subprocess.run(["wrk", "-t", str(WRK_THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds:g}s", "--timeout", "5s",
                           "-s", str(script), base + path], capture_output=True, text=True)
    line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed on {path}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    found = json.loads(line[len("BENCH "):])
    found["rps"] = found["requests"] / (found["duration_us"] / 1e6)
    found["errors"] = found["connect"] + found["read"] + found["write"] + found["timeout"] + found["not_200"]
    return found


class Server:
    """scripts/serve.sh (nginx in front of gunicorn) in a process group of its own."""

    def __init__(self, home: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = gunicorn_command()
        self.log = home / "serve.log"
        self.access_log = home / "access.log"
        self.process = None

    def __enter__(self):
        env = dict(os.environ, HOST="127.0.0.1", PORT=str(self.port), WSGI_APP="bench.bare:application",
                   CL_ACCESS_LOG=str(self.access_log), PY=sys.executable)
        self.process = subprocess.Popen(["bash", str(SERVE)], cwd=ROOT, env=env, stdout=self.log.open("wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"scripts/serve.sh stopped:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=2)
                return self
            except urllib.error.HTTPError as exc:
                if exc.code not in (502, 504):  # nginx answers, gunicorn not yet
                    return self  # 503 (no worker running): the server answers
                time.sleep(0.3)
            except OSError:
                time.sleep(0.3)
        raise SystemExit("scripts/serve.sh did not answer within 60 s")

    def __exit__(self, *exc):
        self.process.terminate()  # serve.sh stops nginx and gunicorn
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()


def drain(server: Server) -> None:
    """Wait until the server has answered the requests still queued when wrk stopped (up to 64
    slow pages): a static file must come back quickly twice in a row."""
    quick, deadline = 0, time.monotonic() + 60
    while quick < 2 and time.monotonic() < deadline:
        started = time.perf_counter()
        urllib.request.urlopen(server.base + "/static/css/site.css", timeout=60).read()
        quick = quick + 1 if time.perf_counter() - started < 0.02 else 0
        time.sleep(0.2)


def measure(server: Server, specs: dict, rounds: int, seconds: float, warm: float, folder: Path, meter) -> dict:
    for name, spec in specs.items():
        status = check(server.base, *spec)
        if status != 200:
            raise SystemExit(f"{name}: {spec[1]} answered {status}, not 200")
    with meter.phase("warm-up"):
        for spec in specs.values():
            wrk(server.base, spec, warm, folder)
            drain(server)
    per_round = {name: [] for name in specs}
    for i in range(rounds):
        for name, spec in specs.items():
            with meter.phase(name):
                per_round[name].append(wrk(server.base, spec, seconds, folder))
            drain(server)
        print(f"  round {i + 1}: " + ", ".join(f"{name} {r[-1]['rps']:,.0f}/s" for name, r in per_round.items()), flush=True)
    for name, spec in specs.items():  # still the same answers at the end (the session, the token)
        assert check(server.base, *spec) == 200, name
    return per_round


def targets_from(per_round: dict, versions: int) -> list:
    def med(name, key):
        return common.median(r[key] for r in per_round[name])

    def ratio(name, base):  # median of the rounds' ratios: each round's pair ran back to back
        return common.median(a["rps"] / b["rps"] if b["rps"] else float("nan") for a, b in zip(per_round[name], per_round[base]))

    errors = sum(r["errors"] for r in per_round["predict"])
    timeouts = sum(r["timeout"] for r in per_round["predict"])
    predict_rps, predict_ratio, p99 = med("predict", "rps"), ratio("predict", "static"), med("predict", "p99_us") / 1e3
    targets = [
        common.Target("`POST /api/v1/predict`, one row: rate", predict_rps, "req/s", "`GET /static/css/site.css` (WhiteNoise)",
                      med("static", "rps"), predict_ratio, "ours / raw rate", f">= {PREDICT_MIN_RPS:,} req/s and >= {PREDICT_MIN_RATIO} of raw",
                      predict_rps >= PREDICT_MIN_RPS and predict_ratio >= PREDICT_MIN_RATIO, rounds=[r["rps"] for r in per_round["predict"]]),
        common.Target("`POST /api/v1/predict`: p99 latency", p99, "ms", "static file p99", med("static", "p99_us") / 1e3,
                      p99 / (med("static", "p99_us") / 1e3), "ours / raw time", f"< {PREDICT_MAX_P99_MS} ms", p99 < PREDICT_MAX_P99_MS,
                      note=f"p50 {med('predict', 'p50_us') / 1e3:.1f} ms"),
        common.Target("`POST /api/v1/predict`: errors and timeouts", errors, "", "static file errors",
                      sum(r["errors"] for r in per_round["static"]), None, "", "none", errors == 0 and timeouts == 0,
                      note=f"{timeouts} timeouts of {sum(r['requests'] for r in per_round['predict']):,} requests"),
    ]
    for name, path in (("overview", "/"), ("models", "/models/")):
        targets.append(common.Target(f"`GET {path}`, {versions} versions, logged in: rate", med(name, "rps"), "req/s",
                                     "`GET /bench/bare/` (trivial template, same middleware)", med("bare", "rps"),
                                     ratio(name, "bare"), "ours / raw rate", f">= {PAGE_MIN_RATIO} of raw",
                                     ratio(name, "bare") >= PAGE_MIN_RATIO, rounds=[r["rps"] for r in per_round[name]],
                                     note=f"p50 {med(name, 'p50_us') / 1e3:.1f} ms, p99 {med(name, 'p99_us') / 1e3:.1f} ms"))
    return targets


MARKDOWN = """### HTTP: the API and the pages through nginx and gunicorn (`bench/web.py`)

{header}

{table}

The web server as `make run` and production start it (`scripts/serve.sh`): Debian's nginx
({nginx}, one worker process, access log to a file) reads each request whole, then hands it over a
unix socket to `{command}`; every request, the static file's too, takes that path. SQLite (the default configuration), DEBUG off, model
v{version} ({estimator}), {versions} versions in the history. Load from Debian's wrk
({wrk}) in a process of its own on 127.0.0.1: {connections} connections, {threads} threads,
{seconds:g} s per endpoint per round after a warm-up, {rounds} rounds interleaved, medians (ratios: the
median of each round's ratio); any answer but 200 counts as an error. wrk, nginx and gunicorn
share the {cores} cores.

| endpoint | req/s | p50 | p99 | errors |
| --- | ---: | ---: | ---: | ---: |
{endpoints}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per endpoint, 2 rounds; writes nothing")
    parser.add_argument("--duration", type=float, default=None, help="seconds per endpoint per round (default 10)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk (make bench installs it)")
    if not (shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)):
        raise SystemExit("nginx is needed (scripts/serve.sh's front): bash scripts/install-nginx.sh (make run installs it)")
    started = time.perf_counter()
    home = common.throwaway_home("web", keep=args.keep)
    seconds = args.duration or (3 if args.quick else 10)
    rounds = args.rounds or (2 if args.quick else 3)
    common.setup_django()
    meter = common.LoadMeter()
    with meter.phase("set-up"):
        state = prepare()
    from modelhub.models import ModelVersion

    active = ModelVersion.active()
    folder = home / "wrk"
    folder.mkdir()
    print(f"nginx + gunicorn (scripts/serve.sh) and wrk: {rounds} rounds of {seconds:g} s per endpoint ...", flush=True)
    with Server(home) as server:
        specs = endpoints(state, server.base)
        per_round = measure(server, specs, rounds, seconds, 3 if args.quick else 5, folder, meter)
    log = server.log.read_text()
    if "Traceback" in log or "[ERROR]" in log or "[error]" in log or "[crit]" in log:
        print(f"the server logged errors:\n{log[-3000:]}")
    targets = targets_from(per_round, state["versions"])
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    rows = []
    for name, spec in specs.items():
        rs = per_round[name]
        rows.append(f"| `{spec[0]} {spec[1]}` | {common.median(r['rps'] for r in rs):,.0f} | {common.median(r['p50_us'] for r in rs) / 1e3:.1f} ms | "
                    f"{common.median(r['p99_us'] for r in rs) / 1e3:.1f} ms | {sum(r['errors'] for r in rs)} |")
    shown = " ".join(shlex.quote(w) for w in server.command)
    nginx = nginx_version()
    markdown = MARKDOWN.format(header="{header}", table=common.targets_markdown(targets), command=shown, version=active.version,
                               estimator=active.estimator, versions=state["versions"], wrk=wrk_version, nginx=nginx, connections=CONNECTIONS,
                               threads=WRK_THREADS, seconds=seconds, rounds=rounds, cores=os.cpu_count(), endpoints="\n".join(rows))
    common.write_result("web", started=started, meter=meter, targets=targets, markdown=markdown, quick=args.quick,
                        extra_versions={"wrk": wrk_version, "nginx": nginx},
                        details={"gunicorn": shown, "nginx": nginx, "connections": CONNECTIONS, "wrk_threads": WRK_THREADS, "seconds_per_endpoint": seconds,
                                 "rounds": per_round, "endpoints": {k: [v[0], v[1]] for k, v in specs.items()},
                                 "server_log_tail": log[-2000:]})


if __name__ == "__main__":
    main()
