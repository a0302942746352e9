"""Business logic: the upload path, refusals that write nothing, storage, rate limit, retention."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import cv2
import numpy as np
import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.management import call_command
from django.utils import timezone

from diagnosis import services
from diagnosis.models import Analysis, Digitization
from diagnosis.tests import helpers
from ecgdx.errors import ModelError

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return User.objects.create_user("alice", password="pw-alice-123")


def test_prediction_create_stores_result_and_private_pictures(alice, _private_media):
    data = helpers.example_bytes()
    outcome = services.prediction_create(image_file=helpers.upload(data), user=alice)
    a = Analysis.objects.get(pk=outcome.analysis.pk)
    assert outcome.stored and a.owner == alice
    assert a.label == "normal" and a.probabilities["normal"] == pytest.approx(0.7)
    assert a.upload_sha256 == hashlib.sha256(data).hexdigest() and a.upload_bytes == len(data)
    assert a.upload_type == "png" and a.gate_ok and a.model_version.startswith("fake-")
    assert a.processing_ms > 0 and a.timings_ms["total"] == 7.0
    assert a.status == "done" and a.progress == 100 and a.attempts == 1 and a.finished_at >= a.started_at
    # The task made the explanation with the verdict, the digitisation and the report.
    assert a.lead_importance[0]["name"] == "I" and a.explanation_method == "page_layout" and a.heatmap_image
    assert Digitization.objects.filter(analysis=a).count() == 1 and a.report_pdf
    files = helpers.files_under(_private_media)
    assert len(files) == 4
    for f in files:
        assert "page" not in f.name and len(f.stem) == 32  # random names, not the upload's
        assert f.stat().st_mode & 0o077 == 0  # readable by the server's user only
    assert {f.parent.parent.parent.name for f in files} == {"uploads", "derived", "reports"}


def test_printed_header_and_footer_are_blanked_in_the_stored_upload(alice, settings):
    settings.ECGDX_BLANK_PRINTED_TEXT = True
    page = np.full((300, 400, 3), 255, np.uint8)
    page[:50] = 0  # "header text"
    page[50:260, :, :] = np.random.default_rng(1).integers(0, 255, (210, 400, 3), dtype=np.uint8)
    page[260:] = 0  # "footer"
    a = services.prediction_create(image_file=helpers.upload(helpers.png_bytes(page)), user=alice).analysis
    assert a.header_blanked
    stored = cv2.imdecode(np.frombuffer(a.original_image.read(), np.uint8), cv2.IMREAD_COLOR)
    y0, y1 = 300 // 5, 300 - 300 // 10  # the fake's crop box
    assert stored[:y0].min() == 255 and stored[y1:].min() == 255
    assert np.array_equal(stored[y0:y1], page[y0:y1])
    assert a.upload_sha256 == hashlib.sha256(helpers.png_bytes(page)).hexdigest()


def test_without_blanking_the_upload_is_stored_byte_for_byte(alice, settings):
    settings.ECGDX_BLANK_PRINTED_TEXT = False
    data = helpers.jpeg_bytes(cv2.imread(str(helpers.EXAMPLE_ECG)))
    a = services.prediction_create(image_file=helpers.upload(data, "x.jpg", "image/jpeg"), user=alice).analysis
    assert not a.header_blanked and a.upload_type == "jpeg" and a.original_image.name.endswith(".jpg")
    assert a.original_image.read() == data


@pytest.mark.parametrize(
    ("data", "code", "status", "words"),
    [
        (b"", "empty_file", 400, "empty"),
        (b"hello, I am a text file\n" * 20, "unsupported_type", 415, "not a JPEG or PNG picture: it looks like a text file"),
        (b"%PDF-1.7\n" + b"0" * 500, "unsupported_type", 415, "PDF"),
        (helpers.example_bytes()[:5000], "invalid_image", 400, "truncated"),
        (helpers.blank_page(), "not_an_ecg", 422, "does not look like a readable 12-lead ECG"),
        (helpers.bmp_bytes(), "unsupported_type", 415, "JPEG or PNG"),
        (helpers.png_bytes(np.zeros((20, 20), np.uint8)), "invalid_image", 400, "only 20x20 pixels"),
    ],
    ids=["empty", "text", "pdf", "truncated", "not-ecg", "bmp", "tiny"],
)
def test_bad_inputs_are_refused_with_a_message_and_nothing_is_written(alice, _private_media, data, code, status,
                                                                       words):
    if code == "not_an_ecg":
        # A readable picture the gate refuses: stored, then failed by its task with the same words.
        a = services.prediction_create(image_file=helpers.upload(data), user=alice).analysis
        assert a.status == "failed" and a.failure_code == code and a.failure_status == status
        assert words in a.failure_reason and a.failure_reason[0].isupper() and "Traceback" not in a.failure_reason
        assert a.label == "" and not a.report_pdf and len(helpers.files_under(_private_media)) == 1
        return
    with pytest.raises(services.UploadRejected) as info:
        services.prediction_create(image_file=helpers.upload(data), user=alice)
    assert info.value.code == code and info.value.status == status
    assert words in info.value.message
    assert info.value.message[0].isupper() and "Traceback" not in info.value.message
    assert helpers.files_under(_private_media) == [] and Analysis.objects.count() == 0


def test_too_large_and_too_many_pixels(alice, settings, _private_media):
    settings.ECGDX_MAX_UPLOAD_BYTES = 100_000
    with pytest.raises(services.UploadRejected) as info:
        services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=alice)
    assert info.value.status == 413 and "limit of 100,000 bytes" in info.value.message
    settings.ECGDX_MAX_UPLOAD_BYTES = 20_000_000
    settings.ECGDX_MAX_IMAGE_PIXELS = 100_000
    with pytest.raises(services.UploadRejected) as info:
        services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=alice)
    assert info.value.status == 413 and info.value.code == "too_many_pixels"
    assert helpers.files_under(_private_media) == []


def test_missing_file(alice):
    with pytest.raises(services.UploadRejected) as info:
        services.prediction_create(image_file=None, user=alice)
    assert info.value.code == "missing_file" and info.value.status == 400


def test_rate_limit_per_user(alice, settings):
    settings.ECGDX_UPLOAD_RATE_LIMIT = 2
    for _ in range(2):
        services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=alice)
    with pytest.raises(services.UploadRejected) as info:
        services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=alice)
    assert info.value.status == 429 and "at most 2 per hour" in info.value.message
    bob = User.objects.create_user("bob", password="pw-bob-123")
    services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=bob)  # own counter


def test_anonymous_demo_is_never_stored(settings, _private_media):
    settings.ECGDX_ANONYMOUS_DEMO = True
    outcome = services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=AnonymousUser(),
                                         client_ip="10.0.0.1")
    assert not outcome.stored and outcome.analysis._state.adding
    assert set(outcome.pictures) == {"original", "model-input", "heatmap"}
    assert Analysis.objects.count() == 0 and helpers.files_under(_private_media) == []
    settings.ECGDX_ANONYMOUS_DEMO = False
    with pytest.raises(services.UploadRejected) as info:
        services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=AnonymousUser())
    assert info.value.status == 401


def test_anonymous_rate_limit_counts_per_ip(settings):
    settings.ECGDX_ANONYMOUS_DEMO = True
    settings.ECGDX_UPLOAD_RATE_LIMIT = 1
    services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=AnonymousUser(),
                               client_ip="10.0.0.1")
    with pytest.raises(services.UploadRejected):
        services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=AnonymousUser(),
                                   client_ip="10.0.0.1")
    services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=AnonymousUser(),
                               client_ip="10.0.0.2")


def test_missing_model_is_a_503_with_a_message(alice, settings, _private_media):
    from diagnosis import inference_adapter

    inference_adapter.reset_predictor()
    settings.ECGDX_PREDICTOR_FACTORY = "diagnosis.tests.test_services.broken_factory"
    a = services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=alice).analysis
    # Retried with backoff (at once in the tests), then failed with the reason; waiting for a model is
    # not an interrupted attempt.
    assert a.status == "failed" and a.failure_code == "model_unavailable" and a.failure_status == 503
    assert "model is not available" in a.failure_reason and a.attempts == 0
    assert len(helpers.files_under(_private_media)) == 1  # the upload is kept: nothing is lost


def broken_factory():
    raise ModelError("no model given and no bundled model is installed")


def test_delete_removes_the_pictures(alice, _private_media):
    a = services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=alice).analysis
    assert len(helpers.files_under(_private_media)) == 4  # upload, model input, heatmap, report
    services.analysis_delete(analysis=a)
    assert helpers.files_under(_private_media) == [] and Analysis.objects.count() == 0


def test_retention_deletes_old_pictures_and_keeps_results(alice, _private_media, settings):
    old = services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=alice).analysis
    new = services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=alice).analysis
    Analysis.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    assert services.images_purge(older_than_days=30, dry_run=True) == 1
    assert len(helpers.files_under(_private_media)) == 8
    settings.ECGDX_IMAGE_RETENTION_DAYS = 30
    call_command("purge_images")
    old.refresh_from_db()
    new.refresh_from_db()
    assert not old.has_images and old.images_deleted_at is not None and old.label == "normal"
    assert new.has_images and new.images_deleted_at is None and not old.report_pdf and new.report_pdf
    assert len(helpers.files_under(_private_media)) == 4
    assert services.images_purge(older_than_days=30) == 0  # idempotent
