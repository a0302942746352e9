"""Celery tasks: thin wrappers that call services (``diagnosis.services.analysis_run``).

``analysis_task`` is acknowledged late (settings: CELERY_TASK_ACKS_LATE), so a worker killed in the
middle of it leaves its message to be delivered again; the service is idempotent. Database errors and
a missing model are retried with exponential backoff; anything else fails the analysis once, with a
reason, so that a poison picture never blocks the queue.

Each worker also runs the recovery sweep (``services.analyses_recover``) every
ECGDX_RECOVERY_INTERVAL_SECONDS on a background thread: analyses whose worker died or whose message
the broker lost are sent again.
"""

from __future__ import annotations

import logging
import threading

from celery import shared_task
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from django.db import DatabaseError, InterfaceError, close_old_connections

from diagnosis import services

logger = logging.getLogger(__name__)

MAX_RETRIES = 8  # 2, 4, 8 ... 256 s: a database or model outage of up to ~8 minutes is ridden out


@shared_task(name="diagnosis.analyse", bind=True, max_retries=MAX_RETRIES)
def analysis_task(self, analysis_id: str) -> str | None:
    try:
        return services.analysis_run(analysis_id=analysis_id)
    except (DatabaseError, InterfaceError, services.AnalysisRetryLater) as exc:
        close_old_connections()
        if self.request.retries >= self.max_retries:
            if isinstance(exc, services.AnalysisRetryLater):
                services.analysis_fail(analysis_id=analysis_id, code="model_unavailable", status=503,
                                       message=str(exc))
                return "failed"
            logger.error("analysis %s: database still unavailable; the recovery sweep will send it again",
                         analysis_id)
            return None
        delay = min(2 ** (self.request.retries + 1), 300)
        logger.warning("analysis %s: %s; retrying in %d s", analysis_id, exc, delay)
        raise self.retry(exc=exc, countdown=delay) from None


def queue_is_empty(app) -> bool:
    """True when the broker's default queue holds no message (Redis list, or the queue folder)."""
    from kombu.exceptions import ChannelError

    with app.connection_for_write() as connection:
        try:
            _, count, _ = connection.default_channel.queue_declare(app.conf.task_default_queue, passive=True)
        except ChannelError as exc:
            # Redis deletes an empty list, so kombu answers "404 NOT_FOUND" for an empty queue.
            if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
                return True
            raise
    return count == 0


def recovery_sweep_once(app) -> list[str]:
    close_old_connections()
    try:
        return services.analyses_recover(queue_is_empty=queue_is_empty(app))
    finally:
        close_old_connections()


_stop = threading.Event()


def _recovery_loop(app, interval: float) -> None:
    while not _stop.wait(interval):
        try:
            recovery_sweep_once(app)
        except Exception as exc:  # noqa: BLE001 - the database or broker is down: try again next round
            logger.warning("recovery sweep skipped: %s", exc)


@worker_ready.connect
def _start_recovery(sender=None, **kwargs) -> None:
    from django.conf import settings

    app = sender.app
    try:
        recovery_sweep_once(app)  # at start: a worker restarted after a crash picks up at once
    except Exception as exc:  # noqa: BLE001
        logger.warning("recovery sweep skipped: %s", exc)
    _stop.clear()
    threading.Thread(target=_recovery_loop, args=(app, settings.ECGDX_RECOVERY_INTERVAL_SECONDS),
                     name="ecgdx-recovery", daemon=True).start()


@worker_shutdown.connect
def _stop_recovery(**kwargs) -> None:
    _stop.set()


@worker_process_init.connect
def _warm_up(**kwargs) -> None:
    """Load the model and the measurement library in each new worker process, before its first picture."""
    from diagnosis.inference_adapter import get_predictor

    try:
        get_predictor()
        import neurokit2  # noqa: F401  (1-2 s to import: paid here, not by the first analysis)
    except Exception as exc:  # noqa: BLE001 - a missing model is reported by the analysis that needs it
        logger.warning("worker warm-up: %s", exc)
