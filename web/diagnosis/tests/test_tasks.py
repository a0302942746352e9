"""The analysis task's guarantees, in one process: one result however often a task is delivered, lost
analyses sent again, poison pictures failed once with a reason (real worker processes: test_workers.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from diagnosis import services, tasks
from diagnosis.models import Analysis, Digitization
from diagnosis.tests import helpers

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def queued(alice, monkeypatch):
    """Uploads whose tasks are sent but not run (no worker): a function making one."""
    from ecgdx_web.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", False)
    sent = []
    monkeypatch.setattr(services, "analysis_enqueue", lambda *, analysis: sent.append(str(analysis.pk)) or True)

    def make(data=None):
        outcome = services.prediction_create(image_file=helpers.upload(data or helpers.example_bytes()), user=alice)
        return Analysis.objects.get(pk=outcome.analysis.pk)

    make.sent = sent
    return make


def test_an_upload_is_stored_queued_and_its_task_sent(queued, _private_media):
    a = queued()
    assert a.status == "queued" and a.label == "" and a.attempts == 0 and a.enqueued_at
    assert queued.sent == [str(a.pk)]
    assert len(helpers.files_under(_private_media)) == 1  # only the upload, as sent


def test_a_task_delivered_twice_gives_one_result(queued, _private_media):
    a = queued()
    assert services.analysis_run(analysis_id=a.pk) == "done"
    first = Analysis.objects.get(pk=a.pk)
    files = helpers.files_under(_private_media)
    assert services.analysis_run(analysis_id=a.pk) is None  # finished: nothing to do
    again = Analysis.objects.get(pk=a.pk)
    assert again.attempts == 1 and again.report_pdf == first.report_pdf and again.heatmap_image == first.heatmap_image
    assert helpers.files_under(_private_media) == files and Digitization.objects.count() == 1


def test_an_attempt_overtaken_by_a_later_one_writes_nothing(queued, _private_media, monkeypatch):
    """Worker 1 is slow; the message is delivered again and worker 2 claims the row meanwhile: worker 1's
    results are thrown away (with its files), worker 2's are the result."""
    a = queued()
    real_digitize = services._digitize

    def digitize_while_another_worker_claims(data):
        Analysis.objects.filter(pk=a.pk).update(attempts=2)  # what worker 2's claim does
        return real_digitize(data)

    monkeypatch.setattr(services, "_digitize", digitize_while_another_worker_claims)
    assert services.analysis_run(analysis_id=a.pk) is None
    row = Analysis.objects.get(pk=a.pk)
    assert row.status == "running" and row.label == "" and not row.heatmap_image
    assert Digitization.objects.count() == 0
    assert len(helpers.files_under(_private_media)) == 1  # worker 1 removed what it wrote
    monkeypatch.setattr(services, "_digitize", real_digitize)
    assert services.analysis_run(analysis_id=a.pk) == "done"  # worker 2 (attempt 3 here) finishes it
    assert Digitization.objects.count() == 1 and len(helpers.files_under(_private_media)) == 4


def test_a_worker_that_died_mid_task_leaves_a_running_row_that_is_sent_again(queued, settings):
    a = queued()
    long_ago = timezone.now() - timedelta(seconds=settings.ECGDX_TASK_TIME_LIMIT + 31)
    Analysis.objects.filter(pk=a.pk).update(status="running", attempts=1, started_at=long_ago)
    fresh = queued()
    Analysis.objects.filter(pk=fresh.pk).update(status="running", attempts=1, started_at=timezone.now())
    queued.sent.clear()
    assert services.analyses_recover(queue_is_empty=False) == [str(a.pk)]  # not the one still running
    assert queued.sent == [str(a.pk)] and Analysis.objects.get(pk=a.pk).status == "queued"
    assert services.analyses_recover(queue_is_empty=False) == []  # taken once
    assert services.analysis_run(analysis_id=a.pk) == "done"
    assert Analysis.objects.get(pk=a.pk).attempts == 2


def test_lost_messages_are_sent_again_only_when_the_queue_is_empty(queued, settings):
    a = queued()
    Analysis.objects.filter(pk=a.pk).update(
        enqueued_at=timezone.now() - timedelta(seconds=settings.ECGDX_REQUEUE_AFTER_SECONDS + 1))
    recent = queued()
    queued.sent.clear()
    assert services.analyses_recover(queue_is_empty=False) == []  # a backlog: its messages are waiting
    assert services.analyses_recover(queue_is_empty=True) == [str(a.pk)]  # recent is left alone
    assert queued.sent == [str(a.pk)] and recent.pk not in queued.sent
    assert services.analyses_recover(queue_is_empty=True) == []  # enqueued_at moved on: sent once


def test_a_picture_that_keeps_killing_its_worker_fails_after_the_limit(queued, settings):
    a = queued()
    Analysis.objects.filter(pk=a.pk).update(attempts=settings.ECGDX_TASK_MAX_ATTEMPTS)
    assert services.analysis_run(analysis_id=a.pk) == "failed"
    row = Analysis.objects.get(pk=a.pk)
    assert row.failure_code == "interrupted" and f"interrupted {settings.ECGDX_TASK_MAX_ATTEMPTS} times" in \
        row.failure_reason


def test_an_unexpected_error_fails_once_with_a_reason_and_the_next_picture_is_analysed(queued, monkeypatch):
    poison, good = queued(), queued()

    def explode(result, gray):
        raise ZeroDivisionError("a bug that this picture triggers")

    monkeypatch.setattr(services, "_explain", explode)
    assert services.analysis_run(analysis_id=poison.pk) == "failed"
    monkeypatch.undo()
    row = Analysis.objects.get(pk=poison.pk)
    assert row.failure_code == "internal_error" and "ZeroDivisionError" in row.failure_reason
    assert row.attempts == 1 and services.analysis_run(analysis_id=poison.pk) is None  # not retried
    assert services.analysis_run(analysis_id=good.pk) == "done"


def test_database_errors_are_retried_by_the_task(queued, monkeypatch):
    from django.db import OperationalError

    a = queued()
    calls = []

    def database_down(*, analysis_id):
        calls.append(analysis_id)
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(services, "analysis_run", database_down)
    retried = []

    def fake_retry(*, exc, countdown):
        retried.append((type(exc).__name__, countdown))
        return RuntimeError("retry scheduled")

    monkeypatch.setattr(tasks.analysis_task, "retry", fake_retry)
    with pytest.raises(RuntimeError, match="retry scheduled"):
        tasks.analysis_task.run(str(a.pk))
    assert calls == [str(a.pk)] and retried == [("OperationalError", 2)]


def test_the_upload_is_kept_when_the_broker_is_down(alice, monkeypatch, _private_media):
    from ecgdx_web.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", False)

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr(tasks.analysis_task, "apply_async", broker_down)
    a = services.prediction_create(image_file=helpers.upload(helpers.example_bytes()), user=alice).analysis
    row = Analysis.objects.get(pk=a.pk)
    assert row.status == "queued" and len(helpers.files_under(_private_media)) == 1  # the sweep sends it later


def test_prefer_wait_header_is_parsed_and_capped(settings, rf):
    from diagnosis.api.views import prefer_wait_seconds

    settings.ECGDX_MAX_PREFER_WAIT_SECONDS = 30

    def seconds(header):
        return prefer_wait_seconds(rf.get("/", HTTP_PREFER=header) if header is not None else rf.get("/"))

    assert seconds(None) == 0 and seconds("respond-async") == 0 and seconds("wait=abc") == 0
    assert seconds("wait=5") == 5 and seconds("respond-async, wait=7") == 7 and seconds("wait=600") == 30


def test_queue_is_empty_also_when_the_broker_has_no_queue_yet(monkeypatch):
    """Redis deletes an empty list, and kombu then says NOT_FOUND: that is an empty queue, not an error
    (the recovery sweep used to stop there). The memory transport behaves the same."""
    from kombu import Connection

    from ecgdx_web.celery import app

    with Connection("memory://") as connection:
        name = "ecgdx-test-queue-that-does-not-exist"
        monkeypatch.setitem(app.conf, "task_default_queue", name)
        monkeypatch.setattr(app, "connection_for_write", lambda: Connection("memory://"))
        assert tasks.queue_is_empty(app)
        queue = connection.SimpleQueue(name)
        queue.put({"x": 1})
        assert not tasks.queue_is_empty(app)
        queue.get(timeout=1).ack()
        assert tasks.queue_is_empty(app)
        queue.close()


def test_prefer_wait_reads_the_row_ever_less_often(queued, monkeypatch):
    """Waiting 10 s for an analysis nobody runs reads its row ~15 times, not 100."""
    a = queued()
    reads = []
    real_refresh = Analysis.refresh_from_db
    monkeypatch.setattr(Analysis, "refresh_from_db", lambda self, *args, **kwargs: reads.append(1) or
                        real_refresh(self, *args, **kwargs))
    clock = {"now": 0.0}
    monkeypatch.setattr(services.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(services.time, "sleep", lambda s: clock.__setitem__("now", clock["now"] + s))
    waited = services.analysis_wait(analysis=a, seconds=10)
    assert waited.status == "queued" and clock["now"] == pytest.approx(10)
    assert 10 <= len(reads) <= 20
