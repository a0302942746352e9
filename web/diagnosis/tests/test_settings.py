"""Settings: production refuses to start unsafe, passes `check --deploy`; local keys stay out of the repo."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2]
GOOD_KEY = "k3y-" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ" * 2


def _manage(args, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in {"DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS", "DEBUG"}}
    env.update({"ECGDX_WEB_DATA_DIR": str(tmp_path / "data"), "PYTHONDONTWRITEBYTECODE": "1"}, **env_extra)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=WEB, env=env, capture_output=True, text=True,
                          timeout=120)


def test_production_check_deploy_has_no_warnings(tmp_path):
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], {
        "DJANGO_SETTINGS_MODULE": "ecgdx_web.settings.production",
        "SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "ecg.example.org",
    }, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(("env", "words"), [
    ({"ALLOWED_HOSTS": "ecg.example.org"}, "SECRET_KEY must be set"),
    ({"ALLOWED_HOSTS": "ecg.example.org", "SECRET_KEY": "short"}, "at least 50"),
    ({"SECRET_KEY": GOOD_KEY}, "ALLOWED_HOSTS must name"),
])
def test_production_refuses_unsafe_configuration(tmp_path, env, words):
    result = _manage(["check"], {"DJANGO_SETTINGS_MODULE": "ecgdx_web.settings.production", **env}, tmp_path)
    assert result.returncode != 0 and words in result.stderr


def test_production_uses_database_url(tmp_path):
    code = ("from django.conf import settings; d = settings.DATABASES['default']; "
            "print(d['ENGINE'], d['NAME'], d['HOST'], settings.DEBUG)")
    result = _manage(["shell", "-v", "0", "-c", code], {
        "DJANGO_SETTINGS_MODULE": "ecgdx_web.settings.production", "SECRET_KEY": GOOD_KEY,
        "ALLOWED_HOSTS": "x", "DATABASE_URL": "postgres://ecg:pw@db.internal:5432/ecgdx",
    }, tmp_path)
    assert result.stdout.split() == ["django.db.backends.postgresql", "ecgdx", "db.internal", "False"], result.stderr


def test_local_settings_generate_a_private_key_outside_the_repo(tmp_path):
    code = "from django.conf import settings; print(settings.SECRET_KEY); print(settings.DEBUG); print(settings.DATABASES['default']['NAME'])"
    env = {"DJANGO_SETTINGS_MODULE": "ecgdx_web.settings.local"}
    first = _manage(["shell", "-v", "0", "-c", code], env, tmp_path)
    second = _manage(["shell", "-v", "0", "-c", code], env, tmp_path)
    assert first.returncode == 0, first.stderr
    key, debug, db = first.stdout.split()
    assert len(key) >= 50 and second.stdout.split()[0] == key  # generated once, then reused
    key_file = tmp_path / "data" / "secret_key"
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert debug == "True" and db == str(tmp_path / "data" / "db.sqlite3")
    assert _manage(["shell", "-v", "0", "-c", code], {**env, "DEBUG": "0"}, tmp_path).stdout.split()[1] == "False"


def test_base_settings_are_safe_by_default():
    from ecgdx_web.settings import base

    assert base.DEBUG is False
    assert base.ECGDX_MAX_UPLOAD_BYTES == 20_000_000
    assert "diagnosis.uploads.LimitedMemoryUploadHandler" == base.FILE_UPLOAD_HANDLERS[0]
    assert len(base.FILE_UPLOAD_HANDLERS) == 1  # no TemporaryFileUploadHandler: uploads never spool to disk
    assert not str(base.PRIVATE_MEDIA_ROOT).startswith(str(WEB))
    assert not hasattr(base, "MEDIA_URL")


def test_no_secret_or_data_file_is_in_the_web_folder():
    tracked_like = [p for p in WEB.rglob("*") if p.name in {"secret_key", "db.sqlite3"}]
    assert tracked_like == []
