"""Private PostgreSQL and Redis servers, and a small filesystem, for the fault suite.

A fault test stops, kills or fills these, never the machine's shared services: each runs from
Debian's own binaries on a free port of its own, in a folder of its own, and is removed at
the end. PostgreSQL refuses to run as root, so its server runs as the `postgres` user.
"""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, up: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} did not come {'up' if up else 'down'} within {timeout} s")


def _as_postgres() -> list[str]:
    # setpriv execs (runuser would stay as a parent), so a Popen's pid is the server's own.
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"] if os.geteuid() == 0 else []


def postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"no PostgreSQL {name} under /usr/lib/postgresql (Debian's postgresql package)")
    return found[-1]


class _PrivateServer:
    """A server process of a test's own: a free port, a folder removed on the way out."""

    prefix = "cl-server-"

    def __init__(self):
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.proc: subprocess.Popen | None = None

    def stop(self) -> None:
        raise NotImplementedError

    def _gone(self) -> None:
        """The process has ended: forget it once its port no longer answers."""
        self.proc = None
        _wait_port(self.port, up=False)

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivatePostgres(_PrivateServer):
    """`with PrivatePostgres() as pg:` a server on pg.port with a database `cl`; pg.url for DATABASE_URL."""

    prefix = "cl-pg-"

    def __init__(self):
        super().__init__()
        self.data = self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/cl"

    def __enter__(self) -> "PrivatePostgres":
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        subprocess.run(_as_postgres() + [postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                                         "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True)
        self.start()
        subprocess.run(_as_postgres() + [postgres_bin("createdb"), "-h", "127.0.0.1",
                                         "-p", str(self.port), "-U", "postgres", "cl"], check=True, capture_output=True)
        return self

    def start(self) -> None:
        self.proc = subprocess.Popen(
            _as_postgres() + [postgres_bin("postgres"), "-D", str(self.data), "-p", str(self.port),
                              "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}",
                              "-c", "fsync=off", "-c", "full_page_writes=off"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "server.log", "ab"))
        _wait_port(self.port, up=True)
        # Accepting connections on the port comes a moment before accepting queries.
        deadline = time.monotonic() + 30
        while subprocess.run(_as_postgres() + [postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("private PostgreSQL did not become ready")
            time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (what `systemctl stop` does): clients are disconnected."""
        if self.proc and self.proc.poll() is None:
            subprocess.run(_as_postgres() + [postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                           capture_output=True)
            self.proc.wait(30)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL to the server and its backends (a crash): it recovers from its log at the next start."""
        if self.proc and self.proc.poll() is None:
            subprocess.run(["pkill", "-KILL", "-P", str(self.proc.pid)])
            self.proc.kill()
            self.proc.wait(30)
        self._gone()


class PrivateRedis(_PrivateServer):
    """`with PrivateRedis() as r:` a server on r.port that keeps nothing on disk; r.url for REDIS_URL."""

    prefix = "cl-redis-"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> "PrivateRedis":
        self.start()
        return self

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self._gone()


class SmallDisk:
    """`with SmallDisk(mib) as path:` a tmpfs of that size, or SmallDisk.unavailable() says why not."""

    def __init__(self, mib: int):
        self.mib = mib
        self.path = Path(tempfile.mkdtemp(prefix="cl-disk-"))

    @staticmethod
    def unavailable() -> str:
        """Why a small filesystem cannot be mounted here ('' when it can)."""
        probe = Path(tempfile.mkdtemp(prefix="cl-disk-probe-"))
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True, text=True)
            if done.returncode != 0:
                return f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"
            subprocess.run(["umount", str(probe)], check=True)
            return ""
        except FileNotFoundError as exc:
            return f"cannot mount a tmpfs here: {exc}"
        finally:
            probe.rmdir()

    def __enter__(self) -> Path:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.mib}m,mode=0700", "tmpfs", str(self.path)], check=True)
        return self.path

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", "-l", str(self.path)])
        shutil.rmtree(self.path, ignore_errors=True)
