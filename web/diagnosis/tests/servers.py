"""Start a real server process on a free loopback port for a test, and stop it afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without Django/web variables the test process may carry, plus ``extra``."""
    drop = {"DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS", "DEBUG", "ECGDX_MODEL_PATH",
            "ECGDX_WEB_DATA_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


@contextlib.contextmanager
def running(cmd: list[str], *, url: str, env: dict[str, str], cwd=None, timeout: float = 60.0):
    """Run ``cmd`` until ``url`` answers (any HTTP status), yield the process, then stop it."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{proc.stdout.read()[-4000:]}")
            try:
                fetch(url, timeout=2)  # any HTTP answer, redirects included, means it is up
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"server did not answer {url} within {timeout:.0f} s") from None
                time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def fetch(url: str, *, data: bytes | None = None, headers: dict | None = None, method: str | None = None,
          timeout: float = 30):
    """(status, headers, body) without raising for 4xx/5xx and without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def multipart(field: str, filename: str, content: bytes, content_type: str = "image/png") -> tuple[bytes, str]:
    boundary = "ecgdxboundary7MA4YWxkTrZu0gW"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """Run ``web/manage.py ARGS`` in ``env``; fail the test with its stderr unless it succeeds. Its stdout."""
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=WEB_DIR, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout
