"""Real server processes for tests that must cross process boundaries."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_of_test_db() -> str:
    """The URL of the database this test runs on, for child processes to share it."""
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or "postgres"
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}"


def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="canary.settings",
        SECRET_KEY="test-only-secret-key-not-for-any-deployment",
        DEBUG="0",
        DATABASE_URL=database_url_of_test_db(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


@contextmanager
def gunicorn(workers: int = 1, crash: bool = False, **extra_env: str) -> Iterator[str]:
    """Start gunicorn on a free port; yield its base URL; stop it afterwards.

    ``crash`` stops it with SIGKILL (every process of the group), as a machine
    failure would, instead of a graceful shutdown.
    """
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "canary.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=server_env(**extra_env),
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, process)
        yield base
    finally:
        stop(process, crash=crash)


@dataclass(frozen=True)
class Server:
    base: str
    pid: int  # the master's; it leads the process group of every worker

    def workers(self) -> list[int]:
        output = subprocess.run(
            ["pgrep", "-g", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in output.split() if int(pid) != self.pid]


@contextmanager
def granian(workers: int = 2, crash: bool = False, **extra_env: str) -> Iterator[Server]:
    """The production web server (``scripts/serve.sh``: granian) on a free port."""
    port = free_port()
    env = server_env(
        CANARY_BIND=f"127.0.0.1:{port}",
        CANARY_SERVE_MIGRATE="0",
        WEB_WORKERS=str(workers),
        WEB_LOG_LEVEL="error",
        PROMETHEUS_MULTIPROC_DIR=str(ROOT / "var" / f"prometheus-test-{port}"),
        **extra_env,
    )
    process = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "serve.sh")], cwd=ROOT, env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, process)
        yield Server(base, process.pid)
    finally:
        stop(process, crash=crash)


@contextmanager
def private_redis(port: int, *arguments: str) -> Iterator[subprocess.Popen]:
    """A Redis of this test's own, so stopping it disturbs nothing else."""
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *arguments,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


class CuttableProxy:
    """A TCP proxy to ``target`` that a test can cut (connections refused) and restore.

    Cutting closes every connection through it and stops listening, as a database
    server that went down would look to its clients.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            # NOTE: close() alone leaves an accept() blocked in another thread waiting,
            # and it would let one more connection through; shutdown() wakes it.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for open_socket in connections:
            with contextlib.suppress(OSError):
                open_socket.shutdown(socket.SHUT_RDWR)
            open_socket.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            if self._listener is not listener:  # cut while this one was accepted
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


def stop(process: subprocess.Popen, *, crash: bool = False) -> None:
    """SIGKILL to the whole process group (``crash``, as a machine failure would), else TERM."""
    if crash:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def wait_until_up(base: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=2)  # noqa: S310 - local test server
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"server at {base} did not start")
