"""pytest configuration of the web tests (collected by `.venv/bin/pytest -q` from the repository root).

Django is configured here (``pytest_configure``) rather than in pyproject.toml, so that the rest of
the test suite runs unchanged where the web extra is not installed: without Django, DRF and
pytest-django every web test is skipped, and says why.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

WEB_DIR = Path(__file__).resolve().parent
_NEEDED = ("django", "rest_framework", "drf_spectacular", "pytest_django", "fpdf", "whitenoise")
MISSING = [name for name in _NEEDED if importlib.util.find_spec(name) is None]

if MISSING:
    collect_ignore_glob = ["*"]


def pytest_report_header(config):
    if MISSING:
        return [f"web tests skipped: {', '.join(MISSING)} not installed (pip install -e '.[web-test]')"]
    return None


def pytest_configure(config):
    if MISSING:
        config.issue_config_time_warning(pytest.PytestWarning(
            f"web tests skipped: {', '.join(MISSING)} not installed (pip install -e '.[web-test]')"), stacklevel=2)
        return
    if str(WEB_DIR) not in sys.path:
        sys.path.insert(0, str(WEB_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ecgdx_web.settings.test")
    import django.conf

    django.conf.settings.DATABASES  # noqa: B018  (loads the settings; pytest-django then sets Django up)


def pytest_unconfigure(config):
    if MISSING or "django.conf" not in sys.modules:
        return
    from django.conf import settings

    data_dir = getattr(settings, "DATA_DIR", None)
    if settings.configured and data_dir and Path(data_dir).name.startswith("ecgdx-web-test-"):
        shutil.rmtree(data_dir, ignore_errors=True)


if not MISSING:

    @pytest.fixture(autouse=True)
    def fake_predictor(settings):
        """Every test starts with the fake predictor (tests that need the real model switch)."""
        from diagnosis import inference_adapter
        from diagnosis.tests.fakes import FakePredictor

        fake = FakePredictor()
        inference_adapter.set_predictor(fake)
        yield fake
        inference_adapter.reset_predictor()

    @pytest.fixture(autouse=True)
    def _private_media(settings, tmp_path):
        """A fresh private media folder per test, so tests can look at exactly what was written."""
        settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
        return settings.PRIVATE_MEDIA_ROOT

    @pytest.fixture(scope="session")
    def tiny_model(tmp_path_factory):
        """A real (random-weight) ecgdx ONNX model, built with the onnx package (no torch)."""
        pytest.importorskip("onnx", reason="the onnx package (train extra) builds the test model")
        from diagnosis.tests.helpers import build_tiny_onnx_model

        return build_tiny_onnx_model(tmp_path_factory.mktemp("model") / "tiny.onnx")

    @pytest.fixture
    def real_predictor(settings, tiny_model):
        """Switch this test to the real torch-free ONNX path (ecgdx.inference.Predictor)."""
        from diagnosis import inference_adapter

        settings.ECGDX_PREDICTOR_FACTORY = "diagnosis.inference_adapter.onnx_predictor"
        settings.ECGDX_MODEL_PATH = str(tiny_model)
        inference_adapter.reset_predictor()
        yield tiny_model
        inference_adapter.reset_predictor()

    @pytest.fixture(autouse=True)
    def _clear_cache():
        from django.core.cache import cache

        cache.clear()
        yield
        cache.clear()
