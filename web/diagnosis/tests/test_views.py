"""Pages: access control, upload flow, errors shown on the page (never a 500 or a stack trace)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from diagnosis.models import Analysis
from diagnosis.tests import helpers

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob():
    return User.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def alice_client(alice):
    c = Client()
    c.force_login(alice)
    return c


def _upload(client, data, name="page.png"):
    return client.post(reverse("diagnosis:upload"), {"image": helpers.upload(data, name)})


def test_pages_need_login_unless_demo(client, settings):
    settings.ECGDX_ANONYMOUS_DEMO = False
    for url in (reverse("diagnosis:upload"), reverse("diagnosis:history")):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    settings.ECGDX_ANONYMOUS_DEMO = True
    response = client.get(reverse("diagnosis:upload"))
    assert response.status_code == 200 and b"this is a demo" in response.content


def test_login_page_and_login(client, alice):
    response = client.get(reverse("login"))
    assert response.status_code == 200 and b'<label for="id_username">' in response.content
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200 and b"wrong" in response.content
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 302


def test_upload_page_has_accessible_form_and_no_external_assets(alice_client):
    response = alice_client.get(reverse("diagnosis:upload"))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<label for="id_image"' in html and 'accept="image/jpeg,image/png' in html
    assert 'data-max-bytes="20000000"' in html and "upload.js" in html
    assert "http://" not in html and "https://" not in html  # no CDN, works offline
    assert "not a medical device" in html


def test_upload_redirects_to_a_result_with_everything(alice_client):
    response = _upload(alice_client, helpers.example_bytes())
    assert response.status_code == 302
    analysis = Analysis.objects.get()
    assert response["Location"] == reverse("diagnosis:result", args=[analysis.pk])
    html = alice_client.get(response["Location"]).content.decode()
    assert 'id="predicted-label"' in html and "Normal" in html
    for name in ("Normal", "Myocardial Infarction", "Abnormal Heartbeat", "History of MI"):
        assert name in html
    assert 'aria-valuenow="70.0"' in html and "width: 70.00%" in html
    assert "Passed" in html and "fake-20250101-deadbeef" in html and "ms</dd>" in html
    assert reverse("diagnosis:image", args=[analysis.pk, "heatmap"]) in html
    assert reverse("diagnosis:image", args=[analysis.pk, "model-input"]) in html
    assert 'id="lead-importance"' in html and ">V1<" in html
    assert "Research tool, not a medical device" in html
    assert reverse("diagnosis:report", args=[analysis.pk]) in html


def test_pictures_and_report_of_own_analysis(alice_client):
    _upload(alice_client, helpers.example_bytes())
    a = Analysis.objects.get()
    for kind in ("original", "model-input", "heatmap"):
        response = alice_client.get(reverse("diagnosis:image", args=[a.pk, kind]))
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert b"".join(response.streaming_content).startswith(b"\x89PNG")
        assert "no-store" in response["Cache-Control"]
    assert alice_client.get(reverse("diagnosis:image", args=[a.pk, "secret"])).status_code == 404
    response = alice_client.get(reverse("diagnosis:report", args=[a.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF") and "attachment" in response["Content-Disposition"]


def test_report_comes_only_from_stored_data(alice_client):
    _upload(alice_client, helpers.example_bytes())
    a = Analysis.objects.get()
    url = reverse("diagnosis:report", args=[a.pk])
    plain = alice_client.get(url).content
    tampered = alice_client.get(url + "?label=mi&path=/etc/passwd&diagnosis=Myocardial+Infarction").content
    assert b"/etc/passwd" not in tampered
    assert len(plain) == pytest.approx(len(tampered), abs=64)  # only the creation timestamp may differ
    assert alice_client.post(url).status_code == 405


def test_other_users_see_nothing_of_alice(alice_client, bob):
    _upload(alice_client, helpers.example_bytes())
    a = Analysis.objects.get()
    other = Client()
    other.force_login(bob)
    for url in (reverse("diagnosis:result", args=[a.pk]), reverse("diagnosis:report", args=[a.pk]),
                reverse("diagnosis:image", args=[a.pk, "original"]), reverse("diagnosis:image", args=[a.pk, "heatmap"])):
        response = other.get(url)
        assert response.status_code == 404, url
        assert b"Traceback" not in response.content
    assert other.post(reverse("diagnosis:delete", args=[a.pk])).status_code == 404
    history = other.get(reverse("diagnosis:history")).content.decode()
    assert str(a.pk) not in history and "0 analyses" in history
    anonymous = Client()
    response = anonymous.get(reverse("diagnosis:image", args=[a.pk, "original"]))
    assert response.status_code == 302  # to the login page
    assert Analysis.objects.filter(pk=a.pk).exists()


def test_history_search_by_label_and_date(alice_client, alice):
    from datetime import timedelta

    from django.utils import timezone

    for _ in range(3):
        _upload(alice_client, helpers.example_bytes())
    first = Analysis.objects.order_by("created_at").first()
    Analysis.objects.filter(pk=first.pk).update(label="mi", created_at=timezone.now() - timedelta(days=10))
    url = reverse("diagnosis:history")
    html = alice_client.get(url).content.decode()
    assert "3 analyses" in html and len(re.findall(r'href="/analyses/[0-9a-f-]{36}/"', html)) == 3
    assert "2 analyses" in alice_client.get(url, {"label": "normal"}).content.decode()
    assert "1 analysis" in alice_client.get(url, {"label": "mi"}).content.decode()
    today = timezone.localdate().isoformat()
    assert "2 analyses" in alice_client.get(url, {"date_from": today}).content.decode()
    old = (timezone.localdate() - timedelta(days=10)).isoformat()
    assert "1 analysis" in alice_client.get(url, {"date_to": old}).content.decode()
    bad = alice_client.get(url, {"date_from": "not-a-date", "label": "cat"})
    assert bad.status_code == 200 and b"Enter a valid date" in bad.content
    swapped = alice_client.get(url, {"date_from": today, "date_to": old})
    assert b"must not be after" in swapped.content


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"just text", 415, "This file is not a JPEG or PNG picture"),
        (helpers.example_bytes()[:4000], 400, "truncated"),
        (helpers.blank_page(), 422, "does not look like a readable 12-lead ECG page"),
    ],
    ids=["empty", "text", "corrupt", "not-ecg"],
)
def test_bad_uploads_show_a_message_on_the_page(alice_client, _private_media, data, status, words):
    response = _upload(alice_client, data)
    if status == 422:
        # Readable but not an ECG page: stored, failed by its task, and its page says why.
        assert response.status_code == 302
        failed = Analysis.objects.get()
        assert failed.status == "failed" and response["Location"] == reverse("diagnosis:result", args=[failed.pk])
        response = alice_client.get(response["Location"])
        assert response.status_code == 200 and 'id="failure-reason"' in response.content.decode()
        history = alice_client.get(reverse("diagnosis:history")).content.decode()
        assert 'data-status="failed"' in history and words in history
    else:
        assert response.status_code == status
        assert Analysis.objects.count() == 0 and helpers.files_under(_private_media) == []
    html = response.content.decode()
    assert words in html and 'role="alert"' in html and "Traceback" not in html


def test_missing_file_and_wrong_method(alice_client):
    response = alice_client.post(reverse("diagnosis:upload"), {})
    assert response.status_code == 400 and b"Choose a JPEG or PNG picture" in response.content
    response = alice_client.put(reverse("diagnosis:upload"))
    assert response.status_code == 405 and b"does not accept PUT" in response.content
    assert response["Allow"] == "GET, POST"
    response = alice_client.get(reverse("diagnosis:delete", args=["00000000-0000-0000-0000-000000000000"]))
    assert response.status_code == 405


def test_too_large_upload_is_refused_without_touching_disk(alice_client, settings, _private_media):
    settings.ECGDX_MAX_UPLOAD_BYTES = 50_000
    response = _upload(alice_client, helpers.example_bytes())  # 136 kB: read but not kept
    assert response.status_code == 413 and b"larger than the limit" in response.content
    settings.ECGDX_MAX_UPLOAD_BYTES = 20_000
    big = helpers.example_bytes() + bytes(100_000)  # declared length far over: not parsed at all
    response = _upload(alice_client, big)
    assert response.status_code == 413 and b"larger than the limit" in response.content
    assert helpers.files_under(_private_media) == []


def test_upload_handler_never_spools_to_a_temporary_file(alice_client, settings, monkeypatch):
    import tempfile

    def no_temp(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_temp)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10  # would make Django's default handlers spool to disk
    assert _upload(alice_client, helpers.example_bytes()).status_code == 302


def test_anonymous_demo_shows_result_inline_and_stores_nothing(client, settings, _private_media):
    settings.ECGDX_ANONYMOUS_DEMO = True
    response = _upload(client, helpers.example_bytes())
    html = response.content.decode()
    assert response.status_code == 200 and "(demo, not stored)" in html
    assert 'src="data:image/png;base64,' in html and "Download PDF" not in html
    assert Analysis.objects.count() == 0 and helpers.files_under(_private_media) == []


def test_upload_rate_limit_page(alice_client, settings):
    settings.ECGDX_UPLOAD_RATE_LIMIT = 1
    assert _upload(alice_client, helpers.example_bytes()).status_code == 302
    response = _upload(alice_client, helpers.example_bytes())
    assert response.status_code == 429 and b"Too many uploads" in response.content


def test_delete_own_analysis(alice_client, _private_media):
    _upload(alice_client, helpers.example_bytes())
    a = Analysis.objects.get()
    response = alice_client.post(reverse("diagnosis:delete", args=[a.pk]))
    assert response.status_code == 302 and Analysis.objects.count() == 0
    assert helpers.files_under(_private_media) == []


def test_signup_and_token_pages(client, settings):
    response = client.post(reverse("signup"), {"username": "carol", "password1": "a-long-pass-1234",
                                               "password2": "a-long-pass-1234"})
    assert response.status_code == 302 and User.objects.filter(username="carol").exists()
    response = client.post(reverse("diagnosis:api-token"), {"action": "create"})
    token = re.search(r'id="token-value"[^>]*value="([0-9a-f]{64})"', response.content.decode()).group(1)
    assert response.status_code == 200 and "shown only this once" in response.content.decode()
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/predictions").status_code == 200
    assert token not in client.get(reverse("diagnosis:api-token")).content.decode()  # shown once only
    settings.ECGDX_ALLOW_SIGNUP = False
    assert Client().get(reverse("signup")).status_code == 404


def test_unknown_pages_and_csrf_failures_are_friendly(alice):
    c = Client(enforce_csrf_checks=True)
    response = c.get("/no/such/page")
    assert response.status_code == 404 and b"There is nothing at this address" in response.content
    c.force_login(alice)
    response = c.post(reverse("diagnosis:upload"), {"image": helpers.upload(helpers.example_bytes())})
    assert response.status_code == 403 and b"CSRF check failed" in response.content


def test_server_error_page_has_no_stack_trace(alice, monkeypatch):
    from diagnosis import selectors

    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "analysis_list", explode)
    c = Client(raise_request_exception=False)
    c.force_login(alice)
    response = c.get(reverse("diagnosis:history"))
    assert response.status_code == 500
    assert b"Something went wrong" in response.content and b"secret internals" not in response.content
    response = c.get("/api/v1/predictions")
    assert response.status_code == 500 and response.json()["error"]["code"] == "server_error"


def test_grayscale_jpeg_upload(alice_client):
    page = (np.random.default_rng(2).random((300, 420)) * 255).astype(np.uint8)
    assert _upload(alice_client, helpers.jpeg_bytes(page), "scan.jpeg").status_code == 302


def test_staff_see_every_analysis_in_the_admin(alice_client, bob):
    _upload(alice_client, helpers.example_bytes())
    a = Analysis.objects.get()
    admin = User.objects.create_superuser("admin", password="pw-admin-123")
    c = Client()
    c.force_login(admin)
    listing = c.get("/admin/diagnosis/analysis/")
    assert listing.status_code == 200 and b"alice" in listing.content
    assert c.get(f"/admin/diagnosis/analysis/{a.pk}/change/").status_code == 200  # read-only view
    c.force_login(bob)  # not staff
    assert c.get("/admin/diagnosis/analysis/").status_code == 302


def test_malformed_multipart_is_a_400_page(alice_client):
    response = alice_client.generic("POST", reverse("diagnosis:upload"), b"--x\r\nContent-Disposition: garbage",
                                    content_type="multipart/form-data; boundary=x")
    assert response.status_code in (400, 403) and b"Traceback" not in response.content
    response = alice_client.generic("POST", reverse("diagnosis:upload"), b"abc",
                                    content_type="multipart/form-data")  # no boundary
    assert response.status_code in (400, 403) and b"Traceback" not in response.content


def test_history_and_result_pages_of_unfinished_analyses(alice, alice_client):
    """Queued and running analyses are listed with their state, and their page shows the progress."""
    queued = Analysis.objects.create(owner=alice, upload_sha256="0" * 64, upload_bytes=1, upload_type="png")
    running = Analysis.objects.create(owner=alice, upload_sha256="1" * 64, upload_bytes=1, upload_type="png",
                                      status="running", stage="digitising the leads", progress=60, attempts=1)
    history = alice_client.get(reverse("diagnosis:history")).content.decode()
    assert 'data-status="queued"' in history and "Waiting" in history
    assert 'data-status="running"' in history and "60%" in history
    page = alice_client.get(reverse("diagnosis:result", args=[running.pk])).content.decode()
    assert 'id="analysis-progress"' in page and 'value="60"' in page and "Digitising the leads" in page
    assert "progress.js" in page and "<script>" not in page  # no inline script (CSP)
    page = alice_client.get(reverse("diagnosis:result", args=[queued.pk])).content.decode()
    assert "Waiting for a worker" in page and 'id="predicted-label"' not in page
    state = alice_client.get(reverse("diagnosis:status", args=[running.pk])).json()
    assert state == {"status": "running", "stage": "digitising the leads", "progress": 60, "failure": ""}
    assert alice_client.get(reverse("diagnosis:report", args=[running.pk])).status_code == 404
