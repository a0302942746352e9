"""Archive batches on the workers: ``diagnosis.predict_page``, sent by `ecgdx predict DIR --broker URL`
(``ecgdx.batch``).

One picture in (its bytes, base64 in the JSON message), one CSV row out: the same prediction and the
same row as a local `ecgdx predict` (``ecgdx.batch.worker_answer``: ``Predictor.predict_many``, then
``ecgdx.prediction_table.prediction_row`` and ``csv_cells``), with the worker's model. The row goes back through the result backend
(CELERY_RESULT_BACKEND); nothing is written to the database or the picture storage: archive batches
are not users' analyses.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import shared_task
from django.conf import settings

_lock = threading.Lock()
_own_predictor = None


def batch_predictor():
    """The worker's ``ecgdx.inference.Predictor``: the one the web app's backend holds (no second copy
    of the model), else one loaded from the same settings (ECGDX_MODEL_PATH, ECGDX_INFERENCE_THREADS)."""
    global _own_predictor
    from diagnosis.inference_adapter import get_predictor
    from ecgdx.inference import Predictor

    try:
        held = getattr(get_predictor(), "predictor", None)
    except Exception:  # noqa: BLE001 - a fake or broken backend: load our own below
        held = None
    if isinstance(held, Predictor):
        return held
    if _own_predictor is None:
        with _lock:
            if _own_predictor is None:
                _own_predictor = Predictor(settings.ECGDX_MODEL_PATH, threads=settings.ECGDX_INFERENCE_THREADS)
    return _own_predictor


# reject_on_worker_lost=False: a picture that kills its pool process fails this task (WorkerLostError)
# instead of being delivered again and again; the client writes no row for it, so a rerun tries it again.
@shared_task(name="diagnosis.predict_page", ignore_result=False, acks_late=True, reject_on_worker_lost=False)
def predict_page(payload: dict[str, Any]) -> dict[str, Any]:
    """{"row": {CSV column: cell}, "message": stderr line or None, "model_version"} (``ecgdx.batch.worker_answer``)."""
    from ecgdx.batch import worker_answer

    return worker_answer(payload, batch_predictor(), max_bytes=settings.ECGDX_MAX_UPLOAD_BYTES)
