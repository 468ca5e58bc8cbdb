"""Slow and announced-but-absent request bodies cannot hold the web workers.

Starts the real web server, scripts/serve.sh (what `make run` and production run: Debian's nginx
in front of gunicorn's two sync workers), on a throw-away CL_HOME (migrated, nothing else), then
opens more slow sockets than there are workers: anonymous logins announcing 1 MB and sending 10
bytes, an upload announcing 5 GB, an API upload announcing 512 MB (within the limit) and
sending nothing, and a request whose headers never end. `GET /healthz` must be answered by the
app within 2 s while they stay open, and nginx must close each of them within its bound
(client_header_timeout / client_body_timeout, CL_CLIENT_TIMEOUT = 5 s; at once for a body over
the limit). Then: the login lock-out counts the client's real address whatever X-Forwarded-For
it sends, and SIGTERM stops nginx and gunicorn, leaving nothing running.

nginx missing is a failure, not a skip: the site's guarantee depends on it.
"""
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from testing.worker import ROOT, Site

pytestmark = pytest.mark.slow  # the real nginx and gunicorn, in processes of their own

SECRET = "slow-bodies-test-secret-key-not-used-anywhere-else"
CLIENT_TIMEOUT = 5  # scripts/serve.sh's default CL_CLIENT_TIMEOUT: the front's bound
ANSWER_WITHIN = 2.0


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if os.access(found, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """scripts/serve.sh in a process group of its own; stopped with SIGTERM, as run.sh stops it."""

    def __init__(self, site: Site, home: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = home / "serve.log"
        self.env = dict(site.env, HOST="127.0.0.1", PORT=str(self.port), PY=sys.executable,
                        CL_ACCESS_LOG=str(home / "access.log"))
        for name in ("CL_CLIENT_TIMEOUT", "CL_TRUSTED_PROXY", "CL_UPLOAD_MAX_BYTES", "WEB_WORKERS", "NGINX_WORKERS", "WSGI_APP"):
            self.env.pop(name, None)  # the defaults: what `make run` serves
        self.process = None

    def start(self):
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(["bash", str(ROOT / "scripts" / "serve.sh")], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 40
        while True:
            assert self.process.poll() is None, f"scripts/serve.sh exited ({self.process.returncode})\n{self.tail()}"
            status, _ = self.healthz(timeout=2)
            if status not in (None, 502, 504):
                return
            assert time.monotonic() < deadline, f"the server did not answer /healthz within 40 s\n{self.tail()}"
            time.sleep(0.2)

    def healthz(self, timeout: float):
        """(status, JSON body) of GET /healthz, (None, None) when there is no answer in time."""
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return None, None

    def stop(self) -> bool:
        """SIGTERM to serve.sh; True when it and everything it started (its process group) are gone."""
        if self.process is None:
            return True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline, gone = time.monotonic() + 10, False
        while not gone and time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
                time.sleep(0.1)
            except ProcessLookupError:
                gone = True
        if not gone:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        return gone

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


def slow_socket(port: int, head: str, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(head.replace("\n", "\r\n").encode() + body)
    s.setblocking(False)
    return s


def still_open(s: socket.socket) -> bool:
    """Open with nothing to read (the server is still waiting for the client)."""
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Reads until the server closes the connection (FIN or reset) or `seconds` pass."""
    s.settimeout(0.2)
    deadline, got = time.monotonic() + seconds, b""
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset (nginx's reset_timedout_connection)
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def login_attempts(base: str, count: int) -> list[int]:
    """`count` failed logins from this machine, each claiming another address and HTTPS in its own
    X-Forwarded-For / X-Forwarded-Proto; the statuses."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(base + "/login/", timeout=10) as response:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode()).group(1)
    statuses = []
    for i in range(count):
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": f"nobody-{i}",
                                       "password": "not-the-password"}).encode()
        request = urllib.request.Request(base + "/login/", data=data, method="POST", headers={
            "X-Forwarded-For": f"203.0.113.{i + 1}", "X-Forwarded-Proto": "https"})
        try:
            with opener.open(request, timeout=10) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
    return statuses


MAKE_TOKENS = """
import json
from api.services import create_token
from testing.builders import make_users
from testing.worker import MARK
users = make_users()
print(MARK + json.dumps({name: create_token(user=users[name])[1] for name in ("viewer", "analyst")}))
"""
# An upload of 500 MB (within the limit) announced, with only the start of its body sent.
ANNOUNCED = "POST {path} HTTP/1.1\nHost: 127.0.0.1\n{auth}Content-Type: multipart/form-data; boundary=x\nContent-Length: 524288000\n\n"


def test_slow_bodies_hold_no_web_worker(tmp_path, site_template):
    assert nginx_binary(), ("nginx is missing: the web server (scripts/serve.sh) needs Debian's nginx in front of gunicorn. "
                            "Install it with `bash scripts/install-nginx.sh` (as root; `make run` and .ci/run do).")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    site = Site(home, f"sqlite:///{home / 'db.sqlite3'}", secret=SECRET)
    site_template().copy_migrated_to(home / "db.sqlite3")  # what `migrate` makes, made once per run
    tokens = site.shell(MAKE_TOKENS)
    server = Server(site, home)
    sockets = []
    try:
        server.start()
        port = server.port
        logins = [slow_socket(port, "POST /login/ HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/x-www-form-urlencoded\n"
                                    "Content-Length: 1048576\n\n", b"username=a") for _ in range(4)]
        huge = slow_socket(port, "POST /data/upload/ HTTP/1.1\nHost: 127.0.0.1\n"
                                 "Content-Type: multipart/form-data; boundary=x\nContent-Length: 5368709120\n\n")
        silent = slow_socket(port, f"POST /api/v1/batches HTTP/1.1\nHost: 127.0.0.1\nAuthorization: Bearer {tokens['analyst']}\n"
                                   "Content-Type: multipart/form-data; boundary=x\nContent-Length: 536870912\n\n")
        headers = slow_socket(port, "GET /healthz HTTP/1.1\nHost: 127.0.0.1\nX-Slow: ")
        sockets = [*logins, huge, silent, headers]
        opened = time.monotonic()

        # The site answers while they are held: three times, a second apart.
        for _ in range(3):
            started = time.monotonic()
            status, body = server.healthz(timeout=ANSWER_WITHIN)
            took = time.monotonic() - started
            assert status in (200, 503) and "status" in json.loads(body), (
                f"GET /healthz got {status} after {took:.1f}s while slow sockets were open\n{server.tail()}")
            assert took < ANSWER_WITHIN
            assert all(still_open(s) for s in [*logins, silent, headers]), "a slow socket was closed too soon to prove anything"
            time.sleep(1)

        # A body over the limit is refused at once, before any of it is read, with the app's words
        # (nginx then lingers up to lingering_timeout, 5 s, for the body it discards).
        huge.settimeout(0.5)
        answer = huge.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413") and b"upload limit" in answer, answer[:300]

        # Someone who may not upload there is refused before a byte of the body is read (clsite/gate.py),
        # so nothing they send reaches the disk: anonymous, and a Viewer's token.
        for head, status in ((ANNOUNCED.format(path="/data/upload/", auth=""), b"401"),
                             (ANNOUNCED.format(path="/api/v1/batches", auth=f"Authorization: Bearer {tokens['viewer']}\n"), b"403")):
            refused = slow_socket(port, head, b"--x\r\n")
            refused.settimeout(ANSWER_WITHIN)
            answer = refused.recv(65536)
            refused.close()
            assert answer.startswith(b"HTTP/1.1 " + status) and b'"detail"' in answer, answer[:300]
        spooled = [p for p in (home / "run" / "web" / "client_body").rglob("*") if p.is_file()]
        assert spooled == [], spooled

        # Every one is closed by nginx within its bound (from its last byte, sent at `opened`).
        bound = CLIENT_TIMEOUT + 2
        for s, what in [*[(s, "a login sending 10 bytes of 1 MB") for s in logins], (huge, "an upload announcing 5 GB"),
                        (silent, "an API upload announcing 512 MB and sending nothing"), (headers, "headers that never end")]:
            closed, _ = closed_within(s, max(0.1, opened + bound - time.monotonic()))
            assert closed, f"{what}: still open {time.monotonic() - opened:.1f}s after its last byte"
        status, _ = server.healthz(timeout=ANSWER_WITHIN)
        assert status in (200, 503)

        # The lock-out counts this machine's address, whatever X-Forwarded-For (or X-Forwarded-Proto:
        # believed, it would make the POST "secure" and fail CSRF's Referer check) the client sends.
        # (The 5th failure from an address locks it: 429 from then on, for any username.)
        statuses = login_attempts(server.base, 6)
        assert statuses == [200] * 4 + [429] * 2, statuses
        with closing(sqlite3.connect(home / "db.sqlite3", timeout=30)) as db:
            addresses = [row[0] for row in db.execute("SELECT DISTINCT ip_address FROM axes_accessattempt")]
        assert addresses == ["127.0.0.1"], addresses
    finally:
        for s in sockets:
            s.close()
        stopped = server.stop()
    assert stopped, f"SIGTERM to scripts/serve.sh left processes running\n{server.tail()}"
    assert "Traceback" not in server.tail(100_000), server.tail()
    assert "auth request unexpected status" not in server.tail(100_000), server.tail()
