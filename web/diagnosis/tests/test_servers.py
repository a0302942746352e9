"""Real server processes: `ecgdx serve` (waitress, local settings) and gunicorn with production settings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diagnosis.tests import helpers
from diagnosis.tests.servers import clean_env, fetch, free_port, manage, multipart, running

WEB = Path(__file__).resolve().parents[2]
GOOD_KEY = "k3y-" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ" * 2


def test_ecgdx_serve_gives_a_working_app(tmp_path, tiny_model):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "ecgdx", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
           "--model", str(tiny_model), "--threads", "2"]
    with running(cmd, url=f"{base}/api/v1/health", env=clean_env()) as proc:
        status, _, body = fetch(f"{base}/api/v1/health")
        assert status == 200 and json.loads(body)["model_version"].startswith("tiny_test_cnn")
        status, _, page = fetch(f"{base}/")
        assert status == 200 and b"this is a demo" in page  # local settings: anonymous demo on
        css = re.search(rb'href="(/static/diagnosis/app\.css)"', page).group(1).decode()
        assert fetch(base + css)[0] == 200
        body, content_type = multipart("image", "Normal_100.png", helpers.example_bytes())
        status, _, answer = fetch(f"{base}/api/v1/predictions", data=body, headers={"Content-Type": content_type})
        assert status == 200 and json.loads(answer)["id"] is None  # demo: answered, not stored
        status, _, answer = fetch(f"{base}/api/v1/predictions", data=b"x", headers={"Content-Type": "text/plain"})
        assert status == 415
        status, _, page = fetch(f"{base}/definitely/missing")
        assert status == 404 and b"Traceback" not in page
    output = proc.stdout.read()
    assert "model tiny_test_cnn" in output and f"open http://127.0.0.1:{port}/" in output
    assert (tmp_path / "data" / "db.sqlite3").is_file() and (tmp_path / "data" / "secret_key").is_file()


def test_ecgdx_serve_without_the_web_folder_says_what_to_do(tmp_path):
    env = clean_env(ECGDX_WEB_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "ecgdx", "serve", "--port", "9"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "source checkout" in result.stderr and "Traceback" not in result.stderr


def test_gunicorn_with_production_settings_and_whitenoise(tmp_path, tiny_model):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists():
        pytest.skip("gunicorn is not installed (web extra)")
    env = clean_env(DJANGO_SETTINGS_MODULE="ecgdx_web.settings.production", SECRET_KEY=GOOD_KEY,
                    ALLOWED_HOSTS="127.0.0.1", ECGDX_WEB_DATA_DIR=str(tmp_path / "data"),
                    ECGDX_MODEL_PATH=str(tiny_model), SECURE_PROXY_SSL_HEADER="1")
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    https = {"X-Forwarded-Proto": "https"}  # as the TLS-terminating proxy sends it
    cmd = [str(gunicorn), "--chdir", str(WEB), "--workers", "2", "--bind", f"127.0.0.1:{port}",
           "ecgdx_web.wsgi"]
    with running(cmd, url=f"{base}/api/v1/health", env=env):
        status, headers, _ = fetch(f"{base}/accounts/login/")
        assert status == 301 and headers["Location"].startswith("https://")  # plain HTTP goes to HTTPS
        status, headers, page = fetch(f"{base}/accounts/login/", headers=https)
        assert status == 200 and "max-age=31536000" in headers["Strict-Transport-Security"]
        css = re.search(rb'href="(/static/diagnosis/app\.[0-9a-f]{12}\.css)"', page)
        assert css, "WhiteNoise's manifest storage should give hashed static names"
        status, headers, _ = fetch(base + css.group(1).decode(), headers=https)
        assert status == 200 and "max-age=315360000" in headers["Cache-Control"]  # immutable, cached forever
        status, _, body = fetch(f"{base}/api/v1/health", headers=https)
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, _, page = fetch(f"{base}/api/v1/docs", headers=https)
        assert status == 200
        bundle = re.search(rb'src="(/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle\.[0-9a-f]{12}\.js)"',
                           page)
        assert bundle and fetch(base + bundle.group(1).decode(), headers=https)[0] == 200  # local, not a CDN
