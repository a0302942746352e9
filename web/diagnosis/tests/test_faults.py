"""Faults under gunicorn with the production settings: no database, no model, a corrupt model, a
worker killed mid-request, and a short burst of concurrent load. Never a 500 or a stack trace; every
accepted upload (202) has its stored row. No analysis worker runs here: the uploads wait in the queue
folder (the workers' faults are test_workers.py; the long load run is `benchmarks/web_load.py`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from diagnosis.tests import helpers
from diagnosis.tests.servers import clean_env, fetch, free_port, manage, multipart, running

WEB = Path(__file__).resolve().parents[2]
KEY = "f4ult-" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ" * 2
HTTPS = {"X-Forwarded-Proto": "https"}  # as the TLS-terminating proxy sends it

pytestmark = pytest.mark.skipif(not Path(sys.executable).with_name("gunicorn").exists(),
                                reason="gunicorn is not installed (web extra)")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(DJANGO_SETTINGS_MODULE="ecgdx_web.settings.production", SECRET_KEY=KEY,
                     ALLOWED_HOSTS="127.0.0.1", ECGDX_WEB_DATA_DIR=str(tmp_path / "data"),
                     SECURE_PROXY_SSL_HEADER="1", ECGDX_UPLOAD_RATE_LIMIT="0", **extra)


def _django(env: dict, code: str) -> str:
    result = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], cwd=WEB,
                            env=dict(env, PYTHONPATH=str(WEB)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _prepared(env: dict) -> str:
    """Migrated database with one user; returns that user's API token."""
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    return _django(env, "from django.contrib.auth.models import User; from diagnosis.api_tokens import api_token_create; "
                        "print(api_token_create(user=User.objects.create_user('f', password='pw-fault-123'), "
                        "replace_existing=False).token)")


def _gunicorn(port: int, workers: int = 2) -> list[str]:
    return [str(Path(sys.executable).with_name("gunicorn")), "--chdir", str(WEB), "--workers", str(workers),
            "--bind", f"127.0.0.1:{port}", "--timeout", "60", "--graceful-timeout", "5", "ecgdx_web.wsgi"]


def _upload(base: str, token: str) -> tuple[int, bytes]:
    body, content_type = multipart("image", "page.png", helpers.example_bytes())
    try:
        status, _, answer = fetch(f"{base}/api/v1/predictions", data=body, timeout=60,
                                  headers={**HTTPS, "Content-Type": content_type, "Authorization": f"Token {token}"})
    except OSError:  # connection reset by a killed worker: the client sees a clean failure and may retry
        return 0, b""
    return status, answer


def _assert_clean_503(status: int, body: bytes) -> None:
    assert status == 503, (status, body[:300])
    assert b"Traceback" not in body and b"File \"" not in body


def test_database_unavailable_gives_503_everywhere(tmp_path, tiny_model):
    # A PostgreSQL server that is not there (port 9: discard, nothing listens).
    env = _env(tmp_path, DATABASE_URL="postgres://ecgdx:pw@127.0.0.1:9/ecgdx", ECGDX_MODEL_PATH=str(tiny_model))
    manage(env, "collectstatic", "--noinput", "-v", "0")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(_gunicorn(port, workers=1), url=f"{base}/api/v1/health", env=env):
        status, _, body = fetch(f"{base}/api/v1/health", headers=HTTPS)
        _assert_clean_503(status, body)
        assert json.loads(body)["database"] is False and json.loads(body)["status"] == "degraded"
        status, _, body = fetch(f"{base}/api/v1/predictions", headers={**HTTPS, "Authorization": "Token abc"})
        _assert_clean_503(status, body)
        assert json.loads(body)["error"]["code"] == "service_unavailable"
        upload, content_type = multipart("image", "page.png", helpers.example_bytes())
        status, _, body = fetch(f"{base}/api/v1/predictions", data=upload,
                                headers={**HTTPS, "Content-Type": content_type, "Authorization": "Token abc"})
        _assert_clean_503(status, body)
        status, _, body = fetch(f"{base}/analyses/", headers={**HTTPS, "Cookie": "sessionid=" + "a1b2c3d4" * 4})
        _assert_clean_503(status, body)
        assert b"database cannot be reached" in body


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_model_missing_or_corrupt_gives_503_and_a_failing_health(tmp_path, problem):
    model = tmp_path / "model.onnx"
    if problem == "corrupt":
        model.write_bytes(b"\x08\x07this is not an onnx model" * 100)
    env = _env(tmp_path, ECGDX_MODEL_PATH=str(model))
    token = _prepared(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(_gunicorn(port, workers=1), url=f"{base}/api/v1/health", env=env):
        status, _, body = fetch(f"{base}/api/v1/health", headers=HTTPS)
        _assert_clean_503(status, body)
        assert json.loads(body)["model_loaded"] is False and json.loads(body)["message"]
        status, _, body = fetch(f"{base}/api/v1/model", headers={**HTTPS, "Authorization": f"Token {token}"})
        _assert_clean_503(status, body)
        # The web tier does not analyse: the upload is stored for the workers (which may have a model).
        status, body = _upload(base, token)
        assert status == 202 and json.loads(body)["status"] == "queued", body
    assert _django(env, "from diagnosis.models import Analysis; print(Analysis.objects.get().status)") == "queued"


def _workers(master: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []


def test_a_killed_worker_is_replaced_and_no_accepted_upload_is_lost(tmp_path, tiny_model):
    env = _env(tmp_path, ECGDX_MODEL_PATH=str(tiny_model))
    token = _prepared(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(_gunicorn(port, workers=2), url=f"{base}/api/v1/health", env=env) as proc:
        for _ in range(4):  # both workers load the model
            assert _upload(base, token)[0] == 202
        results: list[tuple[int, bytes]] = []
        lock = threading.Lock()

        def client():
            for _ in range(6):
                outcome = _upload(base, token)
                with lock:
                    results.append(outcome)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        victims = _workers(proc.pid)
        assert len(victims) == 2
        os.kill(victims[0], signal.SIGKILL)  # mid-load: some request is in flight on it
        for t in threads:
            t.join(timeout=120)
        deadline = time.monotonic() + 30
        while (len(_workers(proc.pid)) < 2 or victims[0] in _workers(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_workers(proc.pid)) == 2 and victims[0] not in _workers(proc.pid)  # replaced
        assert fetch(f"{base}/api/v1/health", headers=HTTPS)[0] == 200
        assert _upload(base, token)[0] == 202  # still serving
        statuses = [status for status, _ in results]
        assert len(statuses) == 36 and all(s in (202, 0) for s in statuses), statuses  # no 5xx
        created = [json.loads(body)["id"] for status, body in results if status == 202]
        assert len(created) >= 30
    stored = _django(env, "from diagnosis.models import Analysis; print(','.join(str(a.pk) for a in Analysis.objects.all()))")
    missing = set(created) - set(stored.split(","))
    assert not missing, f"accepted uploads without a stored row: {missing}"


def test_a_burst_from_16_clients_has_no_errors(tmp_path, tiny_model):
    """A short burst: 16 concurrent clients, 48 uploads, all accepted (202), none lost."""
    env = _env(tmp_path, ECGDX_MODEL_PATH=str(tiny_model))
    token = _prepared(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(_gunicorn(port, workers=2), url=f"{base}/api/v1/health", env=env):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(lambda _: _upload(base, token), range(48)))
    statuses = [status for status, _ in results]
    assert statuses == [202] * 48, statuses
    count = _django(env, "from diagnosis.models import Analysis; print(Analysis.objects.count())")
    assert int(count) == 48
