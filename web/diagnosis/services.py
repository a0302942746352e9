"""Business logic of the diagnosis app. Views, API views and tasks only translate to these calls.

An upload is two steps:

    ``prediction_create`` (in the request): rate limit -> size -> type by content -> decode
        (ecgdx.page.preprocessing.decode_image, with limits) -> store the picture privately under a random
        name and save an Analysis row ``queued`` -> send its task (``analysis_enqueue``). Answered at once.
    ``analysis_run`` (the Celery task, diagnosis.tasks, on any worker): predict -> quality gate ->
        explanation (occlusion, from the model input) -> digitisation and measurements -> PDF report
        -> ``done``; or ``failed`` with a code and a reason for people.

A task can be delivered twice (a worker killed mid-task, a broker that redelivers): ``analysis_run``
claims the row with a conditional update and writes its results only if no later attempt claimed it
since, so an analysis has one result however often it runs. ``analyses_recover`` sends again the
analyses whose worker or message was lost.

Every refusal at upload raises ``UploadRejected`` (a 4xx status, a code and a message for people)
before anything is written to disk. Anonymous demo uploads (setting ECGDX_ANONYMOUS_DEMO) are analysed
in the request and never stored.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import DatabaseError, InterfaceError, transaction
from django.db.models import F
from django.utils import timezone

from diagnosis import images
from diagnosis.inference_adapter import WebPrediction, get_predictor
from diagnosis.models import Analysis
from diagnosis.storage import random_name
from ecgdx.errors import EcgdxError, InvalidImageError, ModelError, NotAnEcgError

logger = logging.getLogger(__name__)


class UploadRejected(Exception):
    """An upload that cannot be analysed; ``message`` is shown to the user as is."""

    def __init__(self, message: str, *, code: str, status: int = 400, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details or {}


@dataclass
class PredictionOutcome:
    """An Analysis (saved for users; unsaved for anonymous demos) plus pictures of a demo upload."""

    analysis: Analysis
    stored: bool
    pictures: dict[str, bytes] = field(default_factory=dict)  # demo only: PNG bytes by image kind
    digitization: Any = None  # demo only: the unsaved Digitization the verdict weighed


# --------------------------------------------------------------------------------------- rate limit


def upload_rate_limited(identity: str) -> bool:
    """Count one upload for ``identity`` ('user:1', 'ip:1.2.3.4'); True when over the limit.

    Fixed windows of ECGDX_UPLOAD_RATE_WINDOW_SECONDS in the default cache (shared by all workers
    when the cache is: production uses a file cache).
    """
    limit = settings.ECGDX_UPLOAD_RATE_LIMIT
    if not limit:
        return False
    window = settings.ECGDX_UPLOAD_RATE_WINDOW_SECONDS
    key = f"ecgdx:uploads:{identity}:{int(time.time() // window)}"
    cache.add(key, 0, timeout=window + 60)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=window + 60)
        count = 1
    return count > limit


def rate_identity(user, client_ip: str | None) -> str:
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{client_ip or 'unknown'}"


# ------------------------------------------------------------------------------------------- upload


def _read_upload(image_file) -> bytes:
    if image_file is None:
        raise UploadRejected("No file was uploaded: choose a JPEG or PNG picture of an ECG page.",
                             code="missing_file", status=400)
    limit = settings.ECGDX_MAX_UPLOAD_BYTES
    if getattr(image_file, "too_large", False) or (image_file.size or 0) > limit:
        raise UploadRejected(
            f"The file is larger than the limit of {_megabytes(limit)}; upload a smaller picture.",
            code="file_too_large", status=413,
        )
    image_file.seek(0)
    data = image_file.read(limit + 1)
    if not data:
        raise UploadRejected("The file is empty (0 bytes); it is not an image.", code="empty_file", status=400)
    if len(data) > limit:
        raise UploadRejected(
            f"The file is larger than the limit of {_megabytes(limit)}; upload a smaller picture.",
            code="file_too_large", status=413,
        )
    return data


def _decode(data: bytes):
    """(gray page, type) or UploadRejected; the type is read from the content, never the name."""
    from ecgdx.page.preprocessing import decode_image

    kind = images.sniff_type(data)
    allowed = [t.lower() for t in settings.ECGDX_ALLOWED_IMAGE_TYPES]
    try:
        gray = decode_image(data, max_pixels=settings.ECGDX_MAX_IMAGE_PIXELS,
                            max_bytes=settings.ECGDX_MAX_UPLOAD_BYTES)
    except InvalidImageError as exc:
        message = _sentence(str(exc))
        if kind is None:
            # decode_image's own message lists every type it reads; say what this app accepts instead.
            hint = str(exc).split("); ", 1)[1] if "); " in str(exc) else ""
            accepted = " or ".join(t.upper() for t in allowed)
            raise UploadRejected(f"This file is not a {accepted} picture" + (f": {hint}" if hint else "") + ".",
                                 code="unsupported_type", status=415) from None
        if "pixels, more than the limit" in message:
            raise UploadRejected(message, code="too_many_pixels", status=413) from None
        raise UploadRejected(message, code="invalid_image", status=400) from None
    if kind is None or kind not in allowed:
        raise UploadRejected(
            f"This picture type is not accepted here; upload a {' or '.join(t.upper() for t in allowed)} file.",
            code="unsupported_type", status=415,
        )
    return gray, kind


def prediction_create(*, image_file, user, client_ip: str | None = None) -> PredictionOutcome:
    """Accept one uploaded picture: for a signed-in ``user``, store it as a ``queued`` Analysis and send
    its task (the analysis itself runs on a worker, ``analysis_run``); for an anonymous demo, analyse it
    now and store nothing.

    Raises:
        UploadRejected: rate limit (429), missing/empty/oversized file (400/413), not a JPEG/PNG
            (415), corrupt or too many pixels (400/413); for a demo also not a readable ECG page (422)
            or no model (503). Nothing is written to disk in any of these cases.
    """
    started = time.perf_counter()
    anonymous = user is None or not user.is_authenticated
    if anonymous and not settings.ECGDX_ANONYMOUS_DEMO:
        raise UploadRejected("Sign in to analyse ECG pictures.", code="not_authenticated", status=401)
    if upload_rate_limited(rate_identity(user, client_ip)):
        raise UploadRejected(
            f"Too many uploads: at most {settings.ECGDX_UPLOAD_RATE_LIMIT} per "
            f"{_duration(settings.ECGDX_UPLOAD_RATE_WINDOW_SECONDS)}. Try again later.",
            code="rate_limited", status=429,
        )
    data = _read_upload(image_file)
    gray, kind = _decode(data)
    if anonymous:
        return _demo_prediction(data, gray, kind, started)
    analysis = Analysis(owner=user, status="queued", upload_sha256=hashlib.sha256(data).hexdigest(),
                        upload_bytes=len(data), upload_type=kind, enqueued_at=timezone.now())
    _save_with_pictures(analysis, {"original": data})
    logger.info("analysis %s by user %s: queued (%.0f ms)", analysis.pk, user.pk,
                1000.0 * (time.perf_counter() - started))
    if analysis_enqueue(analysis=analysis):
        analysis.refresh_from_db()  # a fast worker (or an eager test run) may have started or finished it
    return PredictionOutcome(analysis, stored=True)


def _demo_prediction(data: bytes, gray, kind: str, started: float) -> PredictionOutcome:
    """An anonymous demo upload, analysed in the request because nothing of it is kept."""
    result = _predict(gray, explain=False)
    _check_gate(result)
    pictures = _pictures(data, gray, kind, result)
    digitization = _digitize(pictures["original"])
    result, pictures = _decide_and_explain(result, gray, digitization, pictures)
    analysis = Analysis(status="done", progress=100, upload_sha256=hashlib.sha256(data).hexdigest(),
                        upload_bytes=len(data), upload_type=kind, header_blanked=pictures.pop("_blanked", False),
                        **_result_fields(result), processing_ms=round(1000.0 * (time.perf_counter() - started), 1))
    return PredictionOutcome(analysis, stored=False, pictures=pictures, digitization=digitization)


def _decide_and_explain(result: WebPrediction, gray, digitization, pictures: dict) -> tuple[WebPrediction, dict]:
    """The verdict with the ST-elevation finding of the page's digitised leads weighed in (when the
    model weighs it, ``ecgdx.decision``), then the explanation of that verdict and its heatmap: one
    analysis, so the verdict, the explanation and the findings shown come from the same page."""
    st_elevation = digitization_st_elevation(digitization)
    backend = get_predictor()
    if st_elevation is not None and hasattr(backend, "with_st_elevation"):
        result = backend.with_st_elevation(result, st_elevation)
    explanation = _explain(result, gray)
    if explanation is not None:
        for name in ("leads", "explanation_method", "explanation_note", "explanation_probability", "overlay"):
            setattr(result, name, getattr(explanation, name))
        if result.overlay is not None:
            pictures = {**pictures, "heatmap": images.encode_png(result.overlay)}
    return result, pictures


def digitization_st_elevation(digitization) -> bool | None:
    """Whether the digitised leads meet the ST-elevation criteria (``ecgdx.signals.findings``); None when
    the page was not digitised or its ST segments were measured in fewer than 2 leads."""
    if digitization is None or not digitization.ok:
        return None
    from ecgdx.signals.findings import assess

    measurements = digitization.measurements or {}
    found = assess(measurements, measurements.get("q_waves"))
    return found.stemi if found.st_assessed else None


def _check_gate(result: WebPrediction) -> None:
    if not result.gate_ok or result.label is None:
        reasons = result.gate_reasons or ["it lacks the traces, calibration pulses or contrast of an ECG page"]
        raise UploadRejected(
            "This picture does not look like a readable 12-lead ECG page, so no diagnosis was made: "
            + "; ".join(reasons) + ".",
            code="not_an_ecg", status=422,
            details={"gate": {"ok": False, "score": result.gate_score, "reasons": result.gate_reasons}},
        )


def _result_fields(result: WebPrediction) -> dict:
    """The Analysis fields of a prediction (with its explanation when it has one)."""
    return {
        "label": result.label, "probabilities": result.probabilities, "model_version": result.model_version,
        "gate_ok": result.gate_ok, "gate_score": result.gate_score, "gate_reasons": result.gate_reasons,
        "timings_ms": result.timings_ms, "lead_importance": result.leads,
        "explanation_method": result.explanation_method, "explanation_note": result.explanation_note,
        "explanation_probability": result.explanation_probability, "preprocess": _jsonable(result.preprocess),
        "st_elevation_weighed": result.st_elevation, "picture_probabilities": result.picture_probabilities or {},
    }


def _predict(gray, *, explain: bool) -> WebPrediction:
    try:
        backend = get_predictor()
    except ModelError as exc:
        logger.error("model unavailable: %s", exc)
        raise UploadRejected(
            "The diagnosis model is not available on this server, so the picture could not be analysed. "
            "An administrator must install a model (see docs/web.md).",
            code="model_unavailable", status=503,
        ) from None
    try:
        return backend.predict(gray, explain=explain)
    except NotAnEcgError as exc:
        raise UploadRejected(_sentence(str(exc)), code="not_an_ecg", status=422) from None
    except InvalidImageError as exc:
        raise UploadRejected(_sentence(str(exc)), code="invalid_image", status=400) from None
    except EcgdxError as exc:
        logger.exception("prediction failed")
        raise UploadRejected(f"The picture could not be analysed: {exc}", code="prediction_failed",
                             status=422) from None


def _pictures(data: bytes, gray, kind: str, result: WebPrediction) -> dict:
    """PNG/JPEG bytes by image kind: the upload (maybe blanked), what the model saw, the heatmap."""
    pictures: dict = {}
    crop = result.preprocess.get("crop_box")
    steps = (result.preprocess.get("normalization") or {}).get("applied") or []
    # A turned page counts too: its crop box is in the upright page's rows, which are not the
    # upload's (blanking the upload by them would keep the printed header and blank the traces).
    geometric = any(step.startswith(("perspective", "rotation", "orientation")) for step in steps)
    if settings.ECGDX_BLANK_PRINTED_TEXT and crop and geometric:
        # A photo that was straightened or turned: the crop box is in the straightened page's pixels,
        # so the straightened page (gray) is what is stored, blanked; the later explanation and
        # digitisation then read a page that needs no straightening.
        from ecgdx.page.normalize import normalize_page

        straight, _ = normalize_page(gray)
        pictures["original"] = images.blank_outside_rows(b"", straight, crop)
        pictures["_blanked"] = True
    elif settings.ECGDX_BLANK_PRINTED_TEXT and crop:
        pictures["original"] = images.blank_outside_rows(data, gray, crop)
        pictures["_blanked"] = True
    else:
        pictures["original"] = data
    if result.model_input is not None:
        pictures["model-input"] = images.encode_png(result.model_input)
    if result.overlay is not None:
        pictures["heatmap"] = images.encode_png(result.overlay)
    return pictures


def _save_with_pictures(analysis: Analysis, pictures: dict) -> None:
    """Write the pictures under random names, then the row; remove the files if the row fails."""
    saved = []
    try:
        for kind, field_name in (("original", "original_image"), ("model-input", "model_input_image"),
                                 ("heatmap", "heatmap_image")):
            content = pictures.get(kind)
            if not content:
                continue
            extension = analysis.upload_type if kind == "original" and not analysis.header_blanked else "png"
            folder = "uploads" if kind == "original" else "derived"
            field_file = getattr(analysis, field_name)
            field_file.save(random_name(folder, "jpg" if extension == "jpeg" else extension),
                            ContentFile(content), save=False)
            saved.append(field_file)
        with transaction.atomic():
            analysis.save()
    except Exception:
        for field_file in saved:
            field_file.storage.delete(field_file.name)
        raise


# ------------------------------------------------------------------------------------ the analysis


class AnalysisRetryLater(Exception):
    """A failure that may pass (no model on this worker yet): the task tries again later."""


def analysis_enqueue(*, analysis: Analysis) -> bool:
    """Send the analysis task of a stored ``queued`` analysis; False when the broker cannot be reached.

    The upload is stored either way: an analysis whose message was not sent stays ``queued`` and the
    recovery sweep of the workers (``analyses_recover``) sends it when the broker is back.
    """
    from diagnosis.tasks import analysis_task

    try:
        analysis_task.apply_async(args=[str(analysis.pk)], retry=True,
                                  retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5})
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds; the analysis must not be lost
        logger.error("analysis %s: task not sent (the recovery sweep will send it): %s", analysis.pk, exc)
        return False
    return True


def _progress(pk, attempt: int, stage: str, percent: int) -> None:
    Analysis.objects.filter(pk=pk, status="running", attempts=attempt).update(stage=stage, progress=percent)


def analysis_fail(*, analysis_id, code: str, message: str, status: int = 422, attempt: int | None = None) -> bool:
    """Mark a queued or running analysis ``failed`` with a reason for people; False if it was finished."""
    qs = Analysis.objects.filter(pk=analysis_id, status__in=("queued", "running"))
    if attempt is not None:
        qs = qs.filter(attempts=attempt)
    updated = qs.update(status="failed", failure_code=code, failure_reason=message, failure_status=status,
                        stage="", finished_at=timezone.now())
    if updated:
        logger.info("analysis %s: failed (%s): %s", analysis_id, code, message)
    return bool(updated)


def analysis_run(*, analysis_id) -> str | None:
    """Run the whole analysis of a stored upload; returns its final status, None when there was
    nothing to do (finished already, deleted, or claimed by a later attempt).

    Idempotent: the row is claimed by a conditional update that counts the attempt, and each write
    is conditional on that attempt still being the latest, so a duplicate delivery never writes a
    second result. Database errors propagate (the task retries them); ``AnalysisRetryLater`` too.
    """
    from celery.exceptions import SoftTimeLimitExceeded

    claimed = Analysis.objects.filter(pk=analysis_id, status__in=("queued", "running")).update(
        status="running", started_at=timezone.now(), attempts=F("attempts") + 1, stage="reading the page",
        progress=5)
    if not claimed:
        return None
    analysis = Analysis.objects.get(pk=analysis_id)
    attempt = analysis.attempts
    if attempt > settings.ECGDX_TASK_MAX_ATTEMPTS:
        analysis_fail(analysis_id=analysis_id, attempt=attempt, code="interrupted", status=500, message=(
            f"The analysis was interrupted {attempt - 1} times (its worker stopped while reading this picture), "
            "so it was not tried again. Try another picture of the page."))
        return "failed"
    try:
        return _analyse(analysis, attempt)
    except AnalysisRetryLater:
        # Not the picture's fault: give the attempt back, so that waiting for a model never counts
        # towards the limit of interrupted attempts.
        Analysis.objects.filter(pk=analysis_id, status="running", attempts=attempt).update(
            status="queued", attempts=attempt - 1, stage="waiting for the model", progress=0,
            enqueued_at=timezone.now())
        raise
    except (DatabaseError, InterfaceError):
        raise
    except UploadRejected as exc:
        analysis_fail(analysis_id=analysis_id, attempt=attempt, code=exc.code, status=exc.status, message=exc.message)
        return "failed"
    except SoftTimeLimitExceeded:
        analysis_fail(analysis_id=analysis_id, attempt=attempt, code="timeout", status=500, message=(
            f"The analysis took longer than the limit of {settings.ECGDX_TASK_TIME_LIMIT} s and was stopped."))
        return "failed"
    except Exception as exc:  # noqa: BLE001 - a poison picture fails once, with a reason; the queue goes on
        logger.exception("analysis %s: unexpected failure", analysis_id)
        analysis_fail(analysis_id=analysis_id, attempt=attempt, code="internal_error", status=500, message=(
            f"The analysis failed unexpectedly ({type(exc).__name__}); the problem was logged."))
        return "failed"


def _analyse(analysis: Analysis, attempt: int) -> str | None:
    started = time.perf_counter()
    pk = analysis.pk
    data = _stored_upload(analysis)
    if data is None:
        raise UploadRejected("The uploaded picture is no longer stored, so it could not be analysed.",
                             code="picture_missing", status=410)
    kind = analysis.upload_type
    try:
        gray = _decode_stored(data)
    except InvalidImageError as exc:
        raise UploadRejected(_sentence(str(exc)), code="invalid_image", status=400) from None
    try:
        result = _predict(gray, explain=False)
    except UploadRejected as exc:
        if exc.code == "model_unavailable":
            raise AnalysisRetryLater(exc.message) from None
        raise
    _check_gate(result)
    pictures = _pictures(data, gray, kind, result)
    blanked = pictures.pop("_blanked", False)
    _progress(pk, attempt, "digitising the leads", 30)
    digitization = _digitize(pictures["original"])
    _progress(pk, attempt, "explaining the verdict", 60)
    result, pictures = _decide_and_explain(result, gray, digitization, pictures)

    # New files under new names; the row points at them only if this attempt is still the latest.
    names = {}
    for kind_, field_name, folder in (("model-input", "model_input_image", "derived"),
                                      ("heatmap", "heatmap_image", "derived")):
        if pictures.get(kind_):
            names[field_name] = private_storage_save(folder, "png", pictures[kind_])
    blanked_name = private_storage_save("uploads", "png", pictures["original"]) if blanked else ""
    earlier = Analysis.objects.filter(pk=pk).values("model_input_image", "heatmap_image").first() or {}
    fields = {**_result_fields(result), "model_input_image": names.get("model_input_image", ""),
              "heatmap_image": names.get("heatmap_image", ""), "stage": "writing the report", "progress": 85,
              "processing_ms": round(1000.0 * (time.perf_counter() - started), 1)}
    with transaction.atomic():
        updated = Analysis.objects.filter(pk=pk, status="running", attempts=attempt).update(**fields)
        if updated:
            from diagnosis.models import Digitization

            Digitization.objects.get_or_create(analysis_id=pk, defaults={
                f.name: getattr(digitization, f.name) for f in Digitization._meta.concrete_fields
                if f.name != "analysis"})
    if not updated:
        _delete_files([*names.values(), blanked_name])
        return None
    _delete_files([name for name in earlier.values() if name and name not in names.values()])

    analysis.refresh_from_db()
    analysis.status = "done"  # the report shows the finished result (saved as done just below)
    from diagnosis.reports import build_report

    report_name = private_storage_save("reports", "pdf", build_report(analysis))
    final = {"status": "done", "stage": "", "progress": 100, "finished_at": timezone.now(), "report_pdf": report_name,
             "processing_ms": round(1000.0 * (time.perf_counter() - started), 1)}
    if blanked:
        final.update(original_image=blanked_name, header_blanked=True)
    updated = Analysis.objects.filter(pk=pk, status="running", attempts=attempt).update(**final)
    if not updated:
        _delete_files([report_name, blanked_name])
        return None
    if blanked:
        _delete_files([analysis.original_image.name])  # the upload as sent, with its printed patient details
    logger.info("analysis %s: %s (%.0f ms, attempt %d)", pk, result.label, final["processing_ms"], attempt)
    return "done"


def _decode_stored(data: bytes):
    """The stored copy of an upload as a gray page. It may be a PNG with the header blanked, larger in
    bytes than the upload, so only the pixel limit applies."""
    from ecgdx.page.preprocessing import decode_image

    return decode_image(data, max_pixels=settings.ECGDX_MAX_IMAGE_PIXELS, max_bytes=max(len(data), 1))


def _explain(result: WebPrediction, gray) -> WebPrediction | None:
    """The explanation of ``result``'s verdict: from the model input itself for a canonical page (so its
    probability is the verdict's), else from the page; None when the backend gave none."""
    predictor = get_predictor()
    canonical = (result.preprocess or {}).get("layout_method") == "canonical"
    if canonical and result.model_input is not None and hasattr(predictor, "explain_model_input"):
        explained = predictor.explain_model_input(result.model_input, result.label, canonical=True,
                                                  st_elevation=result.st_elevation)
    else:
        # A page not read in the canonical layout: its explanation is of the picture's own scale.
        explained = predictor.predict(gray, explain=True, explain_class=result.label)
    return explained if explained.explanation_method else None


def private_storage_save(folder: str, extension: str, content: bytes) -> str:
    from diagnosis.storage import private_storage

    return private_storage().save(random_name(folder, extension), ContentFile(content))


def _delete_files(names) -> None:
    from diagnosis.storage import private_storage

    for name in names:
        if name:
            private_storage().delete(name)


def analysis_wait(*, analysis: Analysis, seconds: float, first_poll: float = 0.1, max_poll: float = 1.0) -> Analysis:
    """The analysis once it is finished, or as it is after ``seconds`` (``Prefer: wait``).

    Reads the row after 0.1 s, then ever less often (x1.5, at most every second): a quick analysis is
    answered quickly, and clients waiting behind a backlog cost the web tier and the database ~1 query
    per second each instead of 10 (benchmarks/web_load.py measured 0.28 core of gunicorn for 16 waiting
    clients at a fixed 0.1 s).
    """
    deadline = time.monotonic() + seconds
    poll = first_poll
    while not analysis.finished and time.monotonic() < deadline:
        time.sleep(min(poll, max(deadline - time.monotonic(), 0)))
        analysis.refresh_from_db()
        poll = min(poll * 1.5, max_poll)
    return analysis


def analyses_recover(*, queue_is_empty: bool, now=None) -> list[str]:
    """Send again the analyses whose task was lost; returns their ids.

    - ``running`` for longer than the task time limit (plus a margin): its worker died (a hard limit
      kills any live one before), so it is made ``queued`` and sent again;
    - ``queued`` for ECGDX_REQUEUE_AFTER_SECONDS while the broker's queue is empty: its message was lost
      (the broker restarted without it, or the broker was down at upload).

    Each is taken by a conditional update of ``enqueued_at``, so that when every worker sweeps at once
    an analysis is still sent once.
    """
    now = now or timezone.now()
    sent = []
    stale_running = Analysis.objects.filter(
        status="running", started_at__lt=now - timedelta(seconds=settings.ECGDX_TASK_TIME_LIMIT + 30))
    for pk, started_at in stale_running.values_list("pk", "started_at"):
        if Analysis.objects.filter(pk=pk, status="running", started_at=started_at).update(
                status="queued", stage="", progress=0, enqueued_at=now):
            sent.append(pk)
    if queue_is_empty:
        lost = Analysis.objects.filter(status="queued", enqueued_at__lt=now - timedelta(
            seconds=settings.ECGDX_REQUEUE_AFTER_SECONDS))
        for pk, enqueued_at in lost.values_list("pk", "enqueued_at"):
            if Analysis.objects.filter(pk=pk, status="queued", enqueued_at=enqueued_at).update(enqueued_at=now):
                sent.append(pk)
    for pk in sent:
        analysis_enqueue(analysis=Analysis(pk=pk))
    if sent:
        logger.warning("recovery: %d lost analyses sent again", len(sent))
    return [str(pk) for pk in sent]


# ----------------------------------------------------------------------------------- other actions


def analysis_delete(*, analysis: Analysis) -> None:
    """Delete an analysis and its pictures (the post_delete signal removes the files)."""
    analysis.delete()


def images_purge(*, older_than_days: int, now=None, dry_run: bool = False) -> int:
    """Delete the stored pictures of analyses older than ``older_than_days``; keep the result rows.

    Returns the number of analyses whose pictures were (or, with dry_run, would be) deleted.
    """
    if older_than_days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=older_than_days)
    candidates = Analysis.objects.filter(created_at__lt=cutoff, images_deleted_at__isnull=True)
    count = 0
    for analysis in candidates.iterator():
        count += 1
        if dry_run:
            continue
        for field_file in (analysis.original_image, analysis.model_input_image, analysis.heatmap_image,
                           analysis.report_pdf):
            if field_file:
                field_file.storage.delete(field_file.name)
        Analysis.objects.filter(pk=analysis.pk).update(
            original_image="", model_input_image="", heatmap_image="", report_pdf="", images_deleted_at=timezone.now()
        )
    return count


# ------------------------------------------------------------------------------------------ helpers


def _megabytes(n: int) -> str:
    return f"{n / 1_000_000:.0f} MB" if n >= 1_000_000 else f"{n:,} bytes"


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    if seconds % 60 == 0:
        minutes = seconds // 60
        return "minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds} seconds"


def _sentence(message: str) -> str:
    """decode_image's messages start with the file's label ('the uploaded image: ...'); drop it, make a sentence."""
    message = message.strip()
    if message.startswith("the uploaded image: "):
        message = message[len("the uploaded image: "):]
    message = message[:1].upper() + message[1:]
    return message if message.endswith(".") else message + "."


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


# ------------------------------------------------------------------------------------- explanation


def _stored_upload(analysis: Analysis) -> bytes | None:
    """The stored copy of the upload, or None when the retention job deleted it or it is missing."""
    if not analysis.original_image:
        return None
    try:
        with analysis.original_image.open("rb") as handle:
            return handle.read()
    except OSError:
        logger.warning("analysis %s: stored picture missing from storage", analysis.pk)
        return None


def _explain_stored_model_input(analysis: Analysis) -> WebPrediction | None:
    """The explanation made from the stored picture the model saw (the verdict's own input, bit for
    bit), or None when that cannot be used: a page not read in the canonical layout, no stored model
    input, another model version, or a backend without the method."""
    predictor = get_predictor()
    # Only canonical pages: their lead boxes are fixed in the model input. A page read as a crop
    # keeps the old path, which finds its leads on the stored page.
    canonical = (analysis.preprocess or {}).get("layout_method") == "canonical"
    if (not canonical or not analysis.model_input_image or not analysis.label
            or analysis.model_version != predictor.model_version or not hasattr(predictor, "explain_model_input")):
        return None
    import cv2
    import numpy as np

    try:
        with analysis.model_input_image.open("rb") as handle:
            data = handle.read()
    except OSError:
        return None
    model_input = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if model_input is None:
        return None
    return predictor.explain_model_input(model_input, analysis.label, canonical=True,
                                         st_elevation=analysis.st_elevation_weighed)


def explanation_get_or_create(*, analysis: Analysis) -> bool:
    """Make and store the explanation of a stored analysis if it has none yet; True when it has one.

    The explanation is computed from the stored picture the model saw (so its probability is the
    verdict's), or, when that is missing or the model was replaced, from the stored upload; always for
    the stored verdict's class, so it never explains another answer than the one shown. False when it cannot be made: the picture was deleted by the
    retention policy, or the model or picture is unavailable now (the reason is logged; the result
    itself is never touched).
    """
    if analysis.explanation_method:
        return True
    if analysis.status != "done":  # the analysis task makes it with the verdict
        return False
    try:
        result = _explain_stored_model_input(analysis)
        if result is None:
            data = _stored_upload(analysis)
            if data is None:
                return False
            gray = _decode_stored(data)
            # Explain the stored verdict, not whatever the model would decide on the stored copy now.
            result = get_predictor().predict(gray, explain=True, explain_class=analysis.label or None)
    except EcgdxError as exc:
        logger.warning("analysis %s: no explanation made: %s", analysis.pk, exc)
        return False
    if not result.explanation_method:
        return False
    heatmap_name = ""
    if result.overlay is not None:
        heatmap_name = analysis.heatmap_image.storage.save(random_name("derived", "png"),
                                                           ContentFile(images.encode_png(result.overlay)))
    fields = {"lead_importance": result.leads, "explanation_method": result.explanation_method,
              "explanation_note": result.explanation_note, "heatmap_image": heatmap_name,
              "explanation_probability": result.explanation_probability}
    # Two first views at once: the first update wins; the loser removes its picture.
    updated = Analysis.objects.filter(pk=analysis.pk, explanation_method="").update(**fields)
    if not updated:
        if heatmap_name:
            analysis.heatmap_image.storage.delete(heatmap_name)
        analysis.refresh_from_db()
        return bool(analysis.explanation_method)
    for name, value in fields.items():
        setattr(analysis, name, value)
    return True


# ------------------------------------------------------------------------------------ digitisation


def digitization_get_or_create(*, analysis: Analysis):
    """The analysis's ``Digitization``, made now from its stored picture if there is none yet.

    Digitising (``ecgdx.signals.digitize``, ~0.2-0.5 s) plus measuring (``ecgdx.signals.measure``, ~0.1 s, and
    about 1.5 s to import neurokit2 the first time in a process) is more than an upload should wait
    for, so it runs on the first view of the result and is stored. Returns None when the pictures
    are gone (retention policy) and nothing was stored before. A page that cannot be digitised gives
    a stored 'failed' row with the reason, never an exception.
    """
    from diagnosis.models import Digitization

    existing = Digitization.objects.filter(analysis=analysis).first()
    if existing is not None or analysis.status != "done":  # the analysis task makes it
        return existing
    data = _stored_upload(analysis)
    if data is None:
        return None
    row = _digitize(data)
    row.analysis = analysis
    with transaction.atomic():
        # Two first views at once: the first row saved wins, the other is discarded.
        saved, _ = Digitization.objects.get_or_create(analysis=analysis, defaults={
            f.name: getattr(row, f.name) for f in Digitization._meta.concrete_fields if f.name != "analysis"})
    return saved


def _digitize(data: bytes):
    """Digitise and measure picture bytes into an unsaved Digitization (status ok or failed)."""
    from diagnosis.models import Digitization

    started = time.perf_counter()
    row = Digitization()
    try:
        from ecgdx.signals.digitize import digitize
        from ecgdx.signals.measure import measure

        result = digitize(data)
        values = measure(result, result.fs)
        q_waves = _q_waves(result, values.qrs_bounds)
    except EcgdxError as exc:
        row.status, row.error = "failed", _sentence(str(exc))
    except ImportError as exc:  # the [signal] extra is missing on this server
        logger.error("digitisation unavailable: %s", exc)
        row.status = "failed"
        row.error = "Digitisation is not installed on this server (pip install 'ecgdx[signal]')."
    else:
        row.status = "ok"
        row.template = result.template
        row.fs = result.fs
        row.set_arrays(result.signals, result.rhythm)
        row.summary = _jsonable(result.summary())
        measurements = values.to_dict()
        # Name the strip by its printed lead ('III rhythm strip'), not measure's generic 'rhythm'.
        measurements["rhythm_source"] = result.source_name(values.rhythm_source)
        measurements["q_waves"] = q_waves
        row.measurements = _jsonable(measurements)
    row.elapsed_ms = round(1000.0 * (time.perf_counter() - started), 1)
    return row


def _q_waves(result, qrs_bounds: list[tuple[int, int]]) -> dict:
    """Lead -> Q-wave measurement dict (or None) of a digitised page, in the QRS complexes ``measure`` delineated."""
    from ecgdx.signals.findings import measure_q_waves

    leads = result.leads_dict()
    return {lead: None if q is None else q.to_dict()
            for lead, q in measure_q_waves(leads, result.fs, qrs_bounds).items()}


# ----------------------------------------------------------------------------------------- findings


def digitization_findings(*, digitization, label: str | None) -> dict | None:
    """Criteria-based findings (``ecgdx.signals.findings``) of a stored or preview Digitization, with where
    they contradict the model's answer ``label``; None when the page was not digitised.

    Computed from the stored measurements on every read (a few microseconds), so a change of the
    criteria applies to old results too; results stored before Q waves were measured list the Q
    criterion as not assessed.
    """
    if digitization is None or not digitization.ok:
        return None
    from ecgdx.signals.findings import assess

    measurements = digitization.measurements or {}
    found = assess(measurements, measurements.get("q_waves"))
    return found.to_dict(label)
