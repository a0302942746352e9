"""Fuzzing the upload API and the whole OpenAPI schema: never a 5xx, nothing on disk for refusals.

The real torch-free path runs (a tiny random-weight ONNX model), so decoding, preprocessing and the
gate see every generated file. ``ECGDX_FUZZ_EXAMPLES`` sets the inputs per test (default 40 for CI;
docs/hostile-inputs.md has the long run).
"""

from __future__ import annotations

import os

import cv2
import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from diagnosis.api_tokens import api_token_create
from diagnosis.models import Analysis
from diagnosis.tests import helpers

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("ECGDX_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("ECGDX_FUZZ_RANDOM") is None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
API = "/api/v1"


def _small_page(kind: str) -> bytes:
    page = cv2.resize(cv2.imread(str(helpers.EXAMPLE_ECG), cv2.IMREAD_GRAYSCALE), (553, 393),
                      interpolation=cv2.INTER_AREA)
    return cv2.imencode("." + kind, page)[1].tobytes()


SEEDS = {"jpg": _small_page("jpg"), "png": _small_page("png"), "none": b""}


@pytest.fixture
def api(db, settings):
    settings.ECGDX_UPLOAD_RATE_LIMIT = 0
    user = User.objects.create_user("fuzz", password="pw-fuzz-123")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user, replace_existing=False).token}")
    return client


def _stored_files() -> int:
    return sum(bool(f) for a in Analysis.objects.all()
               for f in (a.original_image, a.model_input_image, a.heatmap_image))


upload_bodies = st.one_of(
    st.binary(max_size=2048),
    st.tuples(st.sampled_from(["jpg", "png"]), st.integers(0, 10**6), st.binary(min_size=1, max_size=32),
              st.none() | st.integers(0, 10**6)).map(
        lambda t: _splice(SEEDS[t[0]], t[1], t[2], t[3])),
    st.sampled_from([b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
                     b"<html><body onload=alert(1)>", SEEDS["jpg"] + b"<script>alert(1)</script>",
                     b"GIF89a" + b"\x00" * 40, b"%PDF-1.4\n%%EOF"]),
)


def _splice(data: bytes, at: int, chunk: bytes, cut: int | None) -> bytes:
    out = bytearray(data)
    at %= len(out)
    out[at:at + len(chunk)] = chunk
    if cut is not None:
        out = out[: cut % (len(out) + 1)]
    return bytes(out)


@FUZZ
@given(body=upload_bodies,
       name=st.sampled_from(["page.png", "page.jpg", "x.svg", "../../etc/passwd", "a" * 300, "é.html", ""]),
       content_type=st.sampled_from(["image/png", "image/jpeg", "text/html", "image/svg+xml",
                                     "application/octet-stream"]))
def test_fuzzed_uploads_never_give_a_server_error(api, real_predictor, _private_media, body, name, content_type):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile(name or "x", body, content_type=content_type)
    response = api.post(f"{API}/predictions", {"image": upload}, format="multipart")
    assert response.status_code < 500, response.content[:500]
    if response.status_code != 201:
        error = response.json()["error"]
        assert error["message"] and "Traceback" not in error["message"]
    # Refused files leave nothing behind: every file on disk belongs to a stored analysis.
    assert len(helpers.files_under(_private_media)) == _stored_files()


@FUZZ
@given(method=st.sampled_from(["get", "put", "patch", "delete", "head", "options"]),
       path=st.sampled_from(["/predictions", "/predictions/00000000-0000-0000-0000-000000000000",
                             "/predictions/not-a-uuid", "/model", "/health", "/schema",
                             "/predictions/00000000-0000-0000-0000-000000000000/images/heatmap",
                             "/predictions/00000000-0000-0000-0000-000000000000/signals/leads.csv"]),
       query=st.dictionaries(st.sampled_from(["page", "page_size", "label", "date_from", "date_to", "format"]),
                             st.text(max_size=20), max_size=4))
def test_fuzzed_requests_to_every_endpoint_never_give_a_server_error(api, method, path, query):
    response = getattr(api, method)(f"{API}{path}", query if method in ("get", "head") else None)
    assert response.status_code < 500, (method, path, query, response.content[:300])


def test_a_100_mb_upload_is_refused_and_nothing_is_written(api, _private_media):
    body = b"\xff\xd8\xff" + b"\x00" * (100 * 1024 * 1024)
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = api.post(f"{API}/predictions", {"image": SimpleUploadedFile("big.jpg", body, "image/jpeg")},
                        format="multipart")
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"
    assert helpers.files_under(_private_media) == [] and Analysis.objects.count() == 0


schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (web-test extra)")


@pytest.fixture
def openapi_schema(db):
    from django.core.wsgi import get_wsgi_application

    return schemathesis.openapi.from_wsgi(f"{API}/schema", get_wsgi_application())


def test_schemathesis_finds_no_server_error_in_the_openapi_schema(api, openapi_schema, real_predictor):
    """Every operation of the generated schema, with generated valid and invalid data."""
    from schemathesis.checks import not_a_server_error

    token = api._credentials["HTTP_AUTHORIZATION"]
    operations = [result.ok() for result in openapi_schema.get_all_operations()]
    assert len(operations) >= 8
    tried = 0
    for operation in operations:
        strategy = operation.as_strategy()

        @settings(max_examples=max(3, EXAMPLES // 4), deadline=None, database=None,
                  derandomize=os.environ.get("ECGDX_FUZZ_RANDOM") is None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case):
            nonlocal tried
            tried += 1
            case.call_and_validate(headers={"Authorization": token}, checks=[not_a_server_error])

        run()
    assert tried >= len(operations) * 3
