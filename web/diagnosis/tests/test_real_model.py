"""Integration with the real torch-free inference path: a tiny ONNX model through ecgdx.inference."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from diagnosis.api_tokens import api_token_create
from diagnosis.models import Analysis
from diagnosis.tests import helpers
from ecgdx.labels import CLASS_KEYS

WEB = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_upload_through_the_onnx_model(real_predictor):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=alice, replace_existing=False).token}")
    response = api.post("/api/v1/predictions", {"image": helpers.upload(helpers.example_bytes())}, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "done"  # the task ran in the request (tests run tasks eagerly)
    assert body["label"] in CLASS_KEYS and body["model_version"] == "tiny_test_cnn-20250101-0badc0de"
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-6
    assert body["gate"]["ok"] and body["gate"]["score"] > 0.45
    assert body["preprocess"]["crop_box"] and body["preprocess"]["template"] == "3x4_grid"
    # Made by the task for the verdict: the lead layout is found on the page.
    explanation = api.get(body["url"]).json()["explanation"]
    assert explanation == body["explanation"] and explanation["status"] == "ready"
    leads = {lead["name"] for lead in explanation["leads"]}
    assert explanation["method"] == "page_layout" and {"I", "V6"} <= leads
    heatmap = api.get(body["explanation"]["heatmap_url"])
    assert heatmap.status_code == 200
    model_input = b"".join(api.get(body["explanation"]["model_input_url"]).streaming_content)
    import cv2
    import numpy as np

    assert cv2.imdecode(np.frombuffer(model_input, np.uint8), cv2.IMREAD_UNCHANGED).shape == (96, 96)
    a = Analysis.objects.get()
    assert a.header_blanked  # the printed header above the crop box is white in the stored copy
    info = api.get("/api/v1/model").json()
    assert info["test_metrics"] == {"accuracy": 0.25, "macro_f1": 0.1} and info["temperature"] == 1.5
    assert info["architecture"] == "tiny_test_cnn" and info["preprocess"]["height"] == 96
    assert APIClient().get("/api/v1/health").json()["model_version"] == "tiny_test_cnn-20250101-0badc0de"


@pytest.mark.django_db
def test_the_real_gate_refuses_a_blank_page(real_predictor):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    api = APIClient()
    api.force_authenticate(alice)
    response = api.post("/api/v1/predictions", {"image": helpers.upload(helpers.blank_page())}, format="multipart",
                        HTTP_PREFER="wait=30")
    assert response.status_code == 422 and response.json()["error"]["code"] == "not_an_ecg"
    a = Analysis.objects.get()
    assert a.status == "failed" and a.failure_code == "not_an_ecg" and "readable 12-lead ECG" in a.failure_reason


def test_web_app_never_imports_torch(tiny_model, tmp_path):
    """Django set up, every app module imported, one upload, result page and PDF: torch never loaded."""
    script = textwrap.dedent(f"""
        import os, shutil, sys
        sys.path.insert(0, {str(WEB)!r})
        os.environ["DJANGO_SETTINGS_MODULE"] = "ecgdx_web.settings.test"
        import django
        django.setup()
        from django.conf import settings
        settings.ECGDX_PREDICTOR_FACTORY = "diagnosis.inference_adapter.onnx_predictor"
        settings.ECGDX_MODEL_PATH = {str(tiny_model)!r}
        settings.PRIVATE_MEDIA_ROOT = {str(tmp_path / "private")!r}
        from django.core.management import call_command
        call_command("migrate", verbosity=0)
        import ecgdx_web.urls, ecgdx_web.wsgi, diagnosis.admin, diagnosis.api.views, diagnosis.reports  # noqa
        from django.contrib.auth.models import User
        from django.test import Client
        from django.core.files.uploadedfile import SimpleUploadedFile
        User.objects.create_user("u", password="pw-12345678")
        c = Client()
        c.login(username="u", password="pw-12345678")
        data = open({str(helpers.EXAMPLE_ECG)!r}, "rb").read()
        r = c.post("/", {{"image": SimpleUploadedFile("p.png", data, "image/png")}})
        assert r.status_code == 302, r.status_code
        assert c.get(r["Location"]).status_code == 200
        assert c.get(r["Location"] + "report.pdf").content.startswith(b"%PDF")
        shutil.rmtree(settings.DATA_DIR, ignore_errors=True)
        bad = sorted(m for m in ("torch", "torchvision", "albumentations") if m in sys.modules)
        print("IMPORTED", bad)
        sys.exit(1 if bad else 0)
    """)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "IMPORTED []" in result.stdout


@pytest.mark.django_db
def test_a_photographed_page_is_stored_straightened_and_blanked(real_predictor, settings):
    """A photo of the sheet on a table, tilted: the stored copy is the straightened page, header blanked."""
    import cv2
    import numpy as np

    settings.ECGDX_BLANK_PRINTED_TEXT = True
    gray = cv2.imread(str(helpers.EXAMPLE_ECG), cv2.IMREAD_GRAYSCALE)
    h, w = gray.shape
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    placed = np.float32([[120, 90], [w + 150, 70], [w + 170, h + 120], [100, h + 95]])
    photo = cv2.warpPerspective(gray, cv2.getPerspectiveTransform(corners, placed), (w + 280, h + 220),
                                borderMode=cv2.BORDER_CONSTANT, borderValue=60)
    alice = User.objects.create_user("alice", password="pw-alice-123")
    api = APIClient()
    api.force_authenticate(alice)
    response = api.post("/api/v1/predictions", {"image": helpers.upload(helpers.png_bytes(photo))}, format="multipart")
    assert response.status_code == 202 and response.json()["status"] == "done", response.content
    steps = response.json()["preprocess"]["normalization"]["applied"]
    assert any(step.startswith("perspective") for step in steps)
    a = Analysis.objects.get()
    stored = cv2.imdecode(np.frombuffer(a.original_image.read(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert a.header_blanked and stored.shape != photo.shape  # the straightened sheet, not the photo
    assert abs(stored.shape[1] / stored.shape[0] - w / h) < 0.05
    y0 = response.json()["preprocess"]["crop_box"][1]
    assert y0 > 0 and stored[: max(1, y0 - 2)].min() == 255  # the printed header is white


@pytest.fixture
def bundled_predictor(settings):
    """The bundled model (canonical layout, balanced-prior decision) behind the web app."""
    from diagnosis import inference_adapter

    settings.ECGDX_PREDICTOR_FACTORY = "diagnosis.inference_adapter.onnx_predictor"
    settings.ECGDX_MODEL_PATH = None
    inference_adapter.reset_predictor()
    yield
    inference_adapter.reset_predictor()


def _photo_of(gray):
    import cv2
    import numpy as np

    h, w = gray.shape
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    placed = np.float32([[120, 90], [w + 150, 70], [w + 170, h + 120], [100, h + 95]])
    return cv2.warpPerspective(gray, cv2.getPerspectiveTransform(corners, placed), (w + 280, h + 220),
                               borderMode=cv2.BORDER_CONSTANT, borderValue=60)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["scan", "photo", "upside_down"])
def test_the_explanation_is_of_the_verdict_shown(bundled_predictor, settings, kind):
    """One analysis, one truth: the explanation made later explains the stored verdict, with the
    verdict's own probability (it reads the stored picture the model saw, not a recomputed page)."""
    import cv2

    settings.ECGDX_BLANK_PRINTED_TEXT = True
    gray = cv2.imread(str(helpers.REPO / "examples" / "mi" / "MI_35.png"), cv2.IMREAD_GRAYSCALE)
    picture = {"scan": gray, "photo": _photo_of(gray), "upside_down": cv2.rotate(gray, cv2.ROTATE_180)}[kind]
    alice = User.objects.create_user("alice", password="pw-alice-123")
    api = APIClient()
    api.force_authenticate(alice)
    response = api.post("/api/v1/predictions", {"image": helpers.upload(helpers.png_bytes(picture))},
                        format="multipart")
    assert response.status_code == 202 and response.json()["status"] == "done", response.content
    body = response.json()
    assert body["preprocess"]["layout_method"] == "canonical"
    if kind != "scan":
        assert body["preprocess"]["normalization"]["applied"]
    detail = api.get(body["url"]).json()
    explanation = detail["explanation"]
    assert explanation["status"] == "ready" and explanation["method"] == "canonical"
    assert explanation["label"] == body["label"]
    assert explanation["probability"] == pytest.approx(body["probabilities"][body["label"]], abs=1e-6)
    # The verdict weighed the ST-elevation finding of the same page's digitised leads: the one shown.
    findings = detail["digitization"]["findings"]
    assert body["st_elevation_weighed"] is findings["stemi_criteria_met"]
    assert "measured ST segments" in body["decided_from"]
    # What is stored is the upright page with its printed header blanked (an upside-down upload too).
    import numpy as np

    stored = cv2.imdecode(np.frombuffer(b"".join(api.get(explanation["original_url"]).streaming_content), np.uint8),
                          cv2.IMREAD_GRAYSCALE)
    y0 = body["preprocess"]["crop_box"][1]
    assert detail["upload"]["header_blanked"] and stored[: max(1, y0 - 2)].min() == 255


def test_without_a_lead_layout_only_the_top_grid_cells_are_listed():
    import numpy as np

    from diagnosis.inference_adapter import GRID_CELLS_SHOWN, ranked_regions
    from ecgdx.explain import Explanation

    cells = [(f"cell r{i // 8 + 1}c{i % 8 + 1}", 0.5 - i / 200, (0, 0, 8, 8)) for i in range(64)]
    common = {"target": "mi", "base_probability": 0.5, "cell_drops": np.zeros((8, 8)), "heatmap": np.zeros((8, 8)),
              "note": "", "content_box": (0, 0, 8, 8)}
    grid = ranked_regions(Explanation(regions=cells, region_method="grid", **common))
    assert [r["name"] for r in grid] == [c[0] for c in cells[:GRID_CELLS_SHOWN]] and GRID_CELLS_SHOWN == 5
    leads = ranked_regions(Explanation(regions=cells[:13], region_method="canonical", **common))
    assert len(leads) == 13  # every lead of a known layout stays listed


@pytest.mark.django_db
def test_an_st_elevation_page_is_decided_with_its_measured_st_segments(bundled_predictor, settings):
    """The bundled model weighs the ST-elevation finding of the page's digitised leads: on a page that
    meets the STEMI criteria the verdict's MI probability is above the picture's own, the API says
    what was weighed, and the explanation is of that verdict, on its scale."""
    from diagnosis.tests.test_digitization import inferior_stemi_png
    from ecgdx.inference import Predictor

    settings.ECGDX_BLANK_PRINTED_TEXT = False  # the stored page is the upload: the picture-alone check reads it
    data = inferior_stemi_png()
    alone = Predictor().predict(data)
    alice = User.objects.create_user("alice", password="pw-alice-123")
    api = APIClient()
    api.force_authenticate(alice)
    body = api.post("/api/v1/predictions", {"image": helpers.upload(data)}, format="multipart").json()
    assert body["status"] == "done", body
    detail = api.get(body["url"]).json()
    assert detail["digitization"]["findings"]["stemi_criteria_met"] is True
    assert body["st_elevation_weighed"] is True and "criteria met" in body["decided_from"]
    assert body["probabilities"]["mi"] > alone.balanced_probabilities["mi"]
    expected = Predictor().with_st_elevation(alone, True)
    assert body["label"] == expected.label
    assert body["probabilities"]["mi"] == pytest.approx(expected.balanced_probabilities["mi"], abs=1e-6)
    explanation = detail["explanation"]
    assert explanation["label"] == body["label"]
    assert explanation["probability"] == pytest.approx(body["probabilities"][body["label"]], abs=1e-6)
    # What the picture alone said is kept and shown beside the verdict.
    assert body["picture_probabilities"] == pytest.approx(alone.balanced_probabilities, abs=1e-6)
    from django.test import Client

    page = Client()
    page.force_login(alice)
    html = page.get(f"/analyses/{body['id']}/").content.decode()
    picture_name = max(alone.balanced_probabilities, key=alone.balanced_probabilities.get)
    from ecgdx.labels import DISPLAY_NAMES

    assert f"From the picture alone: {DISPLAY_NAMES[picture_name]}" in html
    assert ("the measured ST segments changed the answer" in html) == (picture_name != body["label"])
