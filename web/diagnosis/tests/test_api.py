"""REST API v1: the contract, authentication, access control and JSON errors for every bad input."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from diagnosis.api_tokens import api_token_create
from diagnosis.models import Analysis
from diagnosis.tests import helpers

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def alice():
    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def api(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=alice, replace_existing=False).token}")
    return client


def _post(client, data, name="page.png", prefer=None):
    headers = {"HTTP_PREFER": prefer} if prefer else {}
    return client.post(f"{API}/predictions", {"image": helpers.upload(data, name)}, format="multipart", **headers)


def _assert_error(response, status, code=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()["error"]
    assert body["status"] == status and body["message"] and "Traceback" not in body["message"]
    if code:
        assert body["code"] == code, body
    return body


def test_create_prediction(api):
    response = _post(api, helpers.example_bytes())
    # Accepted at once; in the tests the task runs in the request (CELERY_TASK_ALWAYS_EAGER), so it is done.
    assert response.status_code == 202
    body = response.json()
    a = Analysis.objects.get()
    assert body["id"] == str(a.pk) and body["url"].endswith(f"{API}/predictions/{a.pk}")
    assert response["Location"] == body["url"]
    assert body["status"] == "done" and body["progress"] == 100 and body["failure"] is None and body["attempts"] == 1
    assert body["label"] == "normal" and body["display_name"] == "Normal"
    assert set(body["probabilities"]) == {"normal", "mi", "abnormal_heartbeat", "history_of_mi"}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-9
    assert body["gate"] == {"ok": True, "score": 0.91, "reasons": []}
    assert body["model_version"] == "fake-20250101-deadbeef" and body["processing_ms"] > 0
    e = body["explanation"]
    # The task made the explanation with the verdict, for the verdict's class.
    assert e["status"] == "ready" and e["method"] == "page_layout" and e["label"] == body["label"]
    assert e["leads"][0] == {"name": "I", "importance": 0.2} and a.heatmap_image
    for key in ("heatmap_url", "model_input_url", "original_url"):
        assert e[key].startswith("http://testserver/api/v1/predictions/")
        image = api.get(e[key])
        assert image.status_code == 200 and b"".join(image.streaming_content)[:4] == b"\x89PNG"
    assert body["upload"]["sha256"] == a.upload_sha256 and body["upload"]["type"] == "png"
    assert a.report_pdf, "the task stores the report"
    report = api.get(body["report_url"], HTTP_ACCEPT="application/pdf")
    assert report.status_code == 200 and report.content.startswith(b"%PDF")
    with a.report_pdf.open("rb") as stored:
        assert report.content == stored.read()  # served as stored, not made again


def test_a_queued_prediction_answers_202_and_its_status(api, monkeypatch):
    from ecgdx_web.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", False)  # the message waits in the (memory) broker
    response = _post(api, helpers.example_bytes())
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["label"] is None and body["report_url"] is None
    assert body["probabilities"] == {} and body["digitization"] is None and body["failure"] is None
    assert body["explanation"]["status"] == "pending" and body["explanation"]["heatmap_url"] is None
    assert body["explanation"]["original_url"]  # the stored upload can be seen at once
    detail = api.get(response["Location"]).json()
    assert detail["status"] == "queued" and detail["id"] == body["id"]
    _assert_error(api.get(f"{API}/predictions/{body['id']}/report"), 404, "not_found")
    # Prefer: wait on a queued analysis that nobody runs: the 202 after the wait, not an error.
    started = time.monotonic()
    waited = _post(api, helpers.example_bytes(), prefer="wait=0.3")
    assert waited.status_code == 202 and waited.json()["status"] == "queued"
    assert 0.25 <= time.monotonic() - started < 5
    # A worker runs it: then it is done, and GET says so.
    from diagnosis import services

    assert services.analysis_run(analysis_id=body["id"]) == "done"
    assert api.get(response["Location"]).json()["status"] == "done"


def test_prefer_wait_gives_201_when_finished(api):
    response = _post(api, helpers.example_bytes(), prefer="wait=10")
    assert response.status_code == 201 and response["Preference-Applied"] == "wait"
    assert response.json()["status"] == "done" and response["Location"] == response.json()["url"]
    assert _post(api, helpers.example_bytes(), prefer="respond-async").status_code == 202


def test_a_failed_analysis_has_a_reason(api):
    flat = helpers.blank_page()
    response = _post(api, flat)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "failed" and body["label"] is None and body["report_url"] is None
    assert body["failure"]["code"] == "not_an_ecg" and body["failure"]["status"] == 422
    assert "does not look like a readable 12-lead ECG page" in body["failure"]["message"]
    # Waited for, a failed analysis answers its own error, in the API's error shape, with its id.
    waited = _post(api, flat, prefer="wait=10")
    error = _assert_error(waited, 422, "not_an_ecg")
    assert error["details"]["status"] == "failed" and waited["Location"].endswith(error["details"]["id"])


def test_explanation_made_once(api, settings):
    from diagnosis.inference_adapter import get_predictor

    pid = _post(api, helpers.example_bytes()).json()["id"]
    backend = get_predictor()
    calls = backend.calls
    first = api.get(f"{API}/predictions/{pid}").json()["explanation"]
    assert first["status"] == "ready"
    again = api.get(f"{API}/predictions/{pid}").json()["explanation"]
    assert again == first and backend.calls == calls  # stored by the task, never recomputed on view
    a = Analysis.objects.get(pk=pid)
    assert a.heatmap_image and a.heatmap_image.storage.exists(a.heatmap_image.name)


def test_explanation_kept_and_pictures_gone_after_retention(api):
    from diagnosis import services

    pid = _post(api, helpers.example_bytes()).json()["id"]
    services.images_purge(older_than_days=1, now=Analysis.objects.get(pk=pid).created_at + timedelta(days=2))
    body = api.get(f"{API}/predictions/{pid}").json()
    e = body["explanation"]
    assert e["status"] == "ready" and e["leads"] and body["label"] == "normal"  # results are kept
    assert e["heatmap_url"] is None and e["original_url"] is None and body["images_deleted_at"]
    assert not Analysis.objects.get(pk=pid).report_pdf  # the report holds pictures: purged with them


def test_get_and_list_predictions(api):
    ids = [_post(api, helpers.example_bytes()).json()["id"] for _ in range(3)]
    detail = api.get(f"{API}/predictions/{ids[0]}")
    assert detail.status_code == 200 and detail.json()["id"] == ids[0]
    listing = api.get(f"{API}/predictions", {"page_size": 10})
    body = listing.json()
    assert listing.status_code == 200 and body["count"] == 3
    assert [p["id"] for p in body["results"]] == list(reversed(ids))  # newest first
    assert api.get(f"{API}/predictions", {"label": "mi"}).json()["count"] == 0
    assert api.get(f"{API}/predictions", {"label": "normal", "date_from": "2000-01-01"}).json()["count"] == 3
    _assert_error(api.get(f"{API}/predictions", {"label": "cat"}), 400, "invalid")
    _assert_error(api.get(f"{API}/predictions", {"date_from": "yesterday"}), 400, "invalid")
    _assert_error(api.get(f"{API}/predictions", {"page": 99}), 404)


def test_paging(api):
    for _ in range(3):
        _post(api, helpers.example_bytes())
    assert len(api.get(f"{API}/predictions").json()["results"]) == 3  # default page size 20
    first = api.get(f"{API}/predictions", {"page_size": 2}).json()
    assert len(first["results"]) == 2 and first["next"] and first["previous"] is None
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None


def test_access_control_between_two_users(api):
    pid = _post(api, helpers.example_bytes()).json()["id"]
    bob = User.objects.create_user("bob", password="pw-bob-123")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=bob, replace_existing=False).token}")
    for path in (f"/predictions/{pid}", f"/predictions/{pid}/images/original",
                 f"/predictions/{pid}/images/heatmap", f"/predictions/{pid}/report"):
        _assert_error(other.get(API + path), 404, "not_found")
    assert other.get(f"{API}/predictions").json()["count"] == 0
    anonymous = APIClient()
    for path in ("/predictions", f"/predictions/{pid}", f"/predictions/{pid}/report", "/model"):
        body = _assert_error(anonymous.get(API + path), 401, "not_authenticated")
        assert "credentials" in body["message"]
    _assert_error(_post(anonymous, helpers.example_bytes()), 401)
    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef")
    _assert_error(bad_token.get(f"{API}/predictions"), 401, "authentication_failed")


def test_session_auth_works_too(alice):
    client = APIClient()
    client.force_login(alice)
    assert client.get(f"{API}/predictions").status_code == 200


def test_token_endpoint(alice):
    client = APIClient()
    response = client.post(f"{API}/auth/token", {"username": "alice", "password": "pw-alice-123"}, format="json")
    assert response.status_code == 200 and len(response.json()["token"]) == 64
    assert response.json()["expiry"] is None
    token_client = APIClient()
    token_client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert token_client.get(f"{API}/predictions").status_code == 200
    form = client.post(f"{API}/auth/token", {"username": "alice", "password": "pw-alice-123"})  # curl -d
    assert form.status_code == 200 and form.json()["token"] != response.json()["token"]
    _assert_error(client.post(f"{API}/auth/token", {"username": "alice", "password": "x"}, format="json"), 400,
                  "invalid_credentials")
    _assert_error(client.post(f"{API}/auth/token", {"username": "alice"}, format="json"), 400, "invalid")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_file"),
        (b"<html><body>hi</body></html>", 415, "unsupported_type"),
        (helpers.example_bytes()[:3000], 400, "invalid_image"),
        (helpers.blank_page(), 422, "not_an_ecg"),
        (helpers.bmp_bytes(), 415, "unsupported_type"),
    ],
    ids=["empty", "html", "corrupt", "not-ecg", "bmp"],
)
def test_bad_images_give_4xx_json(api, _private_media, data, status, code):
    # Refused at upload, or (not an ECG page) failed by its task: waited for, the same JSON error.
    body = _assert_error(_post(api, data, prefer="wait=10"), status, code)
    if code == "not_an_ecg":
        # Stored, then failed with a reason: it stays in the history with its picture until deleted.
        assert body["details"]["status"] == "failed"
        failed = Analysis.objects.get()
        assert failed.status == "failed" and failed.failure_code == "not_an_ecg" and failed.attempts == 1
        assert helpers.files_under(_private_media) == [_private_media / failed.original_image.name]
        return
    assert Analysis.objects.count() == 0 and helpers.files_under(_private_media) == []


def test_request_errors_give_4xx_json(api, settings, _private_media):
    body = _assert_error(api.post(f"{API}/predictions", {}, format="multipart"), 400, "missing_file")
    assert "image" in body["fields"]
    _assert_error(api.post(f"{API}/predictions", {"picture": helpers.upload(helpers.example_bytes())},
                           format="multipart"), 400, "missing_file")
    _assert_error(api.post(f"{API}/predictions", {"image": "not a file"}, format="json"), 400, "missing_file")
    _assert_error(api.generic("POST", f"{API}/predictions", b"raw", content_type="text/plain"), 415, "unsupported_type")
    _assert_error(api.generic("POST", f"{API}/predictions", b"--x\r\nbroken",
                              content_type="multipart/form-data; boundary=x"), 400)
    _assert_error(api.delete(f"{API}/predictions"), 405, "method_not_allowed")
    _assert_error(api.put(f"{API}/model"), 405)
    _assert_error(api.get(f"{API}/predictions/not-a-uuid"), 404, "not_found")
    _assert_error(api.get(f"{API}/predictions/00000000-0000-0000-0000-000000000000"), 404, "not_found")
    _assert_error(api.get(f"{API}/predictions/00000000-0000-0000-0000-000000000000/images/heatmap"), 404, "not_found")
    _assert_error(api.get(f"{API}/nothing-here"), 404, "not_found")
    settings.ECGDX_MAX_UPLOAD_BYTES = 50_000
    _assert_error(_post(api, helpers.example_bytes()), 413, "file_too_large")
    settings.ECGDX_MAX_UPLOAD_BYTES = 10_000
    _assert_error(_post(api, helpers.example_bytes() + bytes(50_000)), 413, "file_too_large")
    assert helpers.files_under(_private_media) == []


def test_rate_limit(api, settings):
    settings.ECGDX_UPLOAD_RATE_LIMIT = 1
    assert _post(api, helpers.example_bytes()).status_code == 202
    response = _post(api, helpers.example_bytes())
    _assert_error(response, 429, "rate_limited")
    assert response["Retry-After"]


def test_anonymous_demo_api(settings):
    settings.ECGDX_ANONYMOUS_DEMO = True
    response = _post(APIClient(), helpers.example_bytes())
    body = response.json()
    assert response.status_code == 200 and body["id"] is None and body["report_url"] is None
    assert body["label"] == "normal" and body["explanation"]["heatmap_url"] is None
    assert Analysis.objects.count() == 0
    _assert_error(APIClient().get(f"{API}/predictions"), 401)


def test_model_and_health(api, settings):
    body = api.get(f"{API}/model").json()
    assert body["model_version"] == "fake-20250101-deadbeef"
    assert [c["key"] for c in body["classes"]] == ["normal", "mi", "abnormal_heartbeat", "history_of_mi"]
    assert body["test_metrics"] == {"macro_f1": 0.5}
    health = APIClient().get(f"{API}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["model_loaded"]

    from diagnosis import inference_adapter

    inference_adapter.reset_predictor()
    settings.ECGDX_PREDICTOR_FACTORY = "diagnosis.tests.test_services.broken_factory"
    health = APIClient().get(f"{API}/health")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert "no bundled model" in health.json()["message"]
    _assert_error(api.get(f"{API}/model"), 503, "model_unavailable")
    # The upload is accepted; its task finds no model, tries again with backoff, then fails saying why.
    _assert_error(_post(api, helpers.example_bytes(), prefer="wait=30"), 503, "model_unavailable")


def test_openapi_schema_and_offline_docs(api):
    schema = api.get(f"{API}/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    doc = schema.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path in ("/api/v1/predictions", "/api/v1/predictions/{id}", "/api/v1/model", "/api/v1/health"):
        assert path in paths, sorted(paths)
    upload = paths["/api/v1/predictions"]["post"]["requestBody"]["content"]["multipart/form-data"]
    name = upload["schema"]["$ref"].rsplit("/", 1)[-1]
    assert doc["components"]["schemas"][name]["properties"]["image"]["format"] == "binary"
    create = paths["/api/v1/predictions"]["post"]
    assert {"202", "201", "200", "422"} <= set(create["responses"])
    assert "Location" in create["responses"]["202"]["description"]
    assert any(p["name"] == "Prefer" and p["in"] == "header" for p in create["parameters"])
    assert any(p["name"] == "Prefer" for p in paths["/api/v1/predictions/{id}"]["get"]["parameters"])
    prediction = doc["components"]["schemas"]["Prediction"]["properties"]
    status_schema = prediction["status"]
    if "allOf" in status_schema or "$ref" in status_schema:
        ref = (status_schema.get("allOf") or [status_schema])[0]["$ref"]
        status_schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert status_schema["enum"] == ["queued", "running", "done", "failed"]
    assert {"progress", "stage", "failure", "attempts"} <= set(prediction)
    for docs in ("docs", "redoc"):
        html = api.get(f"{API}/{docs}").content.decode()
        srcs = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"(?:src|href)='([^']+)'", html)
        assert srcs and all(s.startswith("/static/") or not s.startswith("http") for s in srcs), srcs
        assert "cdn" not in html.lower()
    assert api.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200


def test_a_thumbnail_is_refused_with_what_to_do(api, real_predictor):
    """The real gate's reason reaches the API's failure message: a page too small to read its traces."""
    import cv2
    import numpy as np

    page = cv2.imdecode(np.frombuffer(helpers.example_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
    thumb = cv2.resize(page, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    body = _post(api, cv2.imencode(".png", thumb)[1].tobytes()).json()
    assert body["status"] == "failed" and body["label"] is None
    assert body["failure"]["code"] == "not_an_ecg"
    message = body["failure"]["message"]
    assert "the picture is too small to read the traces" in message and "upload the original photo or scan" in message
