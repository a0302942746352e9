"""Archive batches: `ecgdx predict DIR --broker URL` classifies a folder on the web app's workers.

The client (this module) reads each picture, sends its bytes (base64 in a JSON Celery message) to the
task ``diagnosis.predict_page`` by name (``web/diagnosis/batch_tasks.py``, run by `ecgdx worker`) and
writes the row the worker sends back, the same row a local run writes (``ecgdx.prediction_table.prediction_row``
and ``csv_cells`` on both sides). So the CSV is the local run's: same columns, same rows in the same
order, same values given the same model.

- Bounded: at most ``in_flight`` pictures are sent and not yet answered (default 4 per worker process),
  so that an archive of 100,000 files never floods the broker, and uploads from the web app are not
  stuck behind it.
- Resumable: each row is appended to ``--output`` (and flushed) as it comes back; a rerun with the
  same ``--output`` skips every file already in it. At the end the file is rewritten in the local
  run's order (``ecgdx.prediction_table.collect_inputs``).
- Per-file errors do not stop the run: a picture that cannot be read gets the local run's error row;
  one above the web app's upload limit (ECGDX_MAX_UPLOAD_BYTES, 20 MB) gets an error row without
  being sent. A task that fails on the worker (crash, time limit) writes no row, so a rerun tries it again.
- Ctrl+C stops sending, waits briefly for the pictures in flight, keeps every finished row.

Celery is imported only by ``CeleryTransport`` (only with --broker), never Django. The loop itself
(``BatchRun``) talks to a ``Transport``; tests give it an in-process fake.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ecgdx.errors import EcgdxError

TASK_NAME = "diagnosis.predict_page"
# The web app's upload limit (settings ECGDX_MAX_UPLOAD_BYTES, which the workers also check).
DEFAULT_MAX_UPLOAD_BYTES = 20_000_000
MAX_UPLOAD_ENV = "ECGDX_MAX_UPLOAD_BYTES"
IN_FLIGHT_PER_PROCESS = 4
# After Ctrl+C: how long to wait for the pictures in flight.
INTERRUPT_GRACE_SECONDS = 10.0
# A picture not answered within this many seconds after it was sent is given up (a rerun sends it again).
TASK_TIMEOUT_SECONDS = 1800.0
_PROGRESS_MIN = 16  # as for local runs: a bar only for more pictures than this


def max_upload_bytes() -> int:
    raw = os.environ.get(MAX_UPLOAD_ENV, "").strip().replace("_", "")
    try:
        return int(raw) if raw else DEFAULT_MAX_UPLOAD_BYTES
    except ValueError:
        return DEFAULT_MAX_UPLOAD_BYTES


# --------------------------------------------------------------------------------------------------
# the worker's side of the message (diagnosis.batch_tasks calls it with the worker's Predictor)
# --------------------------------------------------------------------------------------------------


class _NamedBytes(io.BytesIO):
    """The picture's bytes under its file name, so that messages name it as a local run does."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name


def worker_answer(payload: dict[str, Any], predictor, *, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> dict[str, Any]:
    """One picture of a batch message -> {"row": {CSV column: cell}, "message": the stderr line a local
    run prints for it (None for a page read normally), "model_version"}: exactly a local run's
    prediction (``Predictor.predict_many``) and row (``prediction_row``, ``csv_cells``)."""
    from ecgdx.prediction_table import csv_cells, csv_header, failure_row, prediction_row, report_message

    display = str(payload.get("path") or "")
    name = str(payload.get("name") or display)
    header = csv_header()

    def failed(error: str) -> dict[str, Any]:
        return {"row": dict(zip(header, csv_cells(failure_row(display, error)), strict=True)),
                "message": f"ecgdx: {error}", "model_version": None}

    try:
        data = base64.b64decode(str(payload.get("data") or ""), validate=True)
    except (binascii.Error, ValueError):
        return failed(f"'{name}': the message did not carry the picture (invalid base64)")
    if len(data) > max_bytes:
        return failed(f"'{name}': is larger than the web app's upload limit of {max_bytes / 1e6:.0f} MB "
                      f"({len(data) / 1e6:.1f} MB); classify it without --broker")
    result = predictor.predict_many([_NamedBytes(data, name)], batch_size=1, force=bool(payload.get("force")))[0]
    row = prediction_row(display, result)
    return {"row": dict(zip(header, csv_cells(row), strict=True)), "message": report_message(display, result),
            "model_version": predictor.model_version}


# --------------------------------------------------------------------------------------------------
# transports: how pictures reach a worker and rows come back
# --------------------------------------------------------------------------------------------------


class Transport(Protocol):
    def submit(self, payload: dict[str, Any]) -> str:
        """Send one picture; returns a handle (the task id)."""

    def collect(self, handles: list[str], timeout: float) -> list[tuple[str, Any]]:
        """(handle, outcome) of the handles that finished, waiting up to ``timeout`` s for at least one.
        The outcome is the task's return value (a dict), or an exception when the task failed."""

    def cancel(self, handles: list[str]) -> None:
        """Forget these tasks (after Ctrl+C): best effort."""

    def close(self) -> None: ...


class WorkerTaskError(Exception):
    """A task failed on its worker (crashed, timed out, raised)."""


class CeleryTransport:
    """``diagnosis.predict_page`` on the workers of a Celery broker, results from a result backend."""

    def __init__(self, broker: str, backend: str | None = None) -> None:
        try:
            from celery import Celery
        except ImportError:
            raise EcgdxError("--broker needs Celery, which comes with the web extra: pip install 'ecgdx[web]'") from None
        if backend is None:
            if not broker.startswith(("redis://", "rediss://", "redis+socket://")):
                raise EcgdxError(f"--broker {_without_password(broker)} is not Redis: give --result-backend URL "
                                 "(the workers' ECGDX_RESULT_BACKEND)")
            backend = broker
        self.broker, self.backend_url = broker, backend
        self.app = Celery("ecgdx-batch", broker=broker, backend=backend, set_as_current=False)
        self.app.conf.update(
            task_serializer="json", result_serializer="json", accept_content=["json"],
            result_accept_content=["json"], broker_connection_retry_on_startup=False,
            broker_connection_timeout=5, redis_socket_connect_timeout=5, redis_socket_timeout=30,
            broker_transport_options={"socket_connect_timeout": 5, "socket_timeout": 30},
        )
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
        except Exception as exc:  # noqa: BLE001 - kombu raises many kinds
            raise EcgdxError(f"cannot reach the broker {_without_password(broker)}: {exc}") from None
        self._results: dict[str, Any] = {}

    def worker_processes(self, timeout: float = 1.0) -> tuple[int, int]:
        """(workers, pool processes) that answered; (0, 0) when none did."""
        try:
            stats = self.app.control.inspect(timeout=timeout).stats() or {}
        except Exception:  # noqa: BLE001
            return 0, 0
        processes = 0
        for info in stats.values():
            pool = (info or {}).get("pool") or {}
            processes += int(pool.get("max-concurrency") or 1)
        return len(stats), processes

    def submit(self, payload: dict[str, Any]) -> str:
        result = self.app.send_task(TASK_NAME, args=[payload])
        self._results[result.id] = result
        return result.id

    def collect(self, handles: list[str], timeout: float) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            done = self._ready(handles)  # one MGET for all (Redis): the results themselves
            # Redis also announces each result on its pub/sub channel, to which send_task subscribed us:
            # read those announcements, or Redis would buffer them for us until it drops the connection.
            self._drain(len(done) + 1, wait=0.0)
            remaining = deadline - time.monotonic()
            if done or remaining <= 0:
                return done
            self._drain(1, wait=min(remaining, 0.25))  # wakes up at the next announcement

    def _drain(self, count: int, wait: float) -> None:
        consumer = getattr(self.app.backend, "result_consumer", None)
        if consumer is None or not hasattr(consumer, "drain_events"):
            if wait:
                time.sleep(wait)
            return
        for i in range(count):
            try:
                consumer.drain_events(timeout=wait if i == 0 else 0)
            except Exception:  # noqa: BLE001 - a dropped pub/sub connection: MGET still finds the results
                if wait:
                    time.sleep(wait)
                return

    def _ready(self, handles: list[str]) -> list[tuple[str, Any]]:
        from celery import states
        from celery.backends.base import KeyValueStoreBackend

        backend = self.app.backend
        done = []
        if isinstance(backend, KeyValueStoreBackend):
            # One MGET for all of them (Redis), not one round trip each.
            values = backend.mget([backend.get_key_for_task(h) for h in handles]) if handles else []
            for handle, value in zip(handles, values, strict=True):
                meta = backend.decode_result(value) if value else {}
                if meta.get("status") in states.READY_STATES:
                    outcome = (meta.get("result") if meta["status"] == states.SUCCESS
                               else _task_error(backend.exception_to_python(meta.get("result")), meta["status"]))
                    done.append((handle, outcome))
        else:  # any other result backend: ask for each
            for handle in handles:
                result = self._results[handle]
                if result.ready():
                    done.append((handle, result.result if result.successful() else _task_error(result.result,
                                                                                                result.state)))
        for handle, _ in done:
            result = self._results.pop(handle)
            try:
                result.forget()  # the row goes into the CSV now: free the backend's copy
            except Exception:  # noqa: BLE001 - a backend that cannot forget: results expire anyway
                pass
        return done

    def cancel(self, handles: list[str]) -> None:
        if not handles:
            return
        try:
            self.app.control.revoke(list(handles))
        except Exception:  # noqa: BLE001 - best effort: their results expire anyway
            pass
        for handle in handles:
            self._results.pop(handle, None)

    def close(self) -> None:
        try:
            self.app.close()
        except Exception:  # noqa: BLE001
            pass


def _task_error(exc: Any, status: str) -> WorkerTaskError:
    return WorkerTaskError(f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(status))


# --------------------------------------------------------------------------------------------------
# the CSV: what is done already, appending, the final rewrite
# --------------------------------------------------------------------------------------------------


def read_done(path: Path, header: list[str]) -> dict[str, list[str]]:
    """Rows of an earlier run's CSV by path ({} when there is none). A last line without its newline
    (a run killed while writing it) is dropped, so that picture is classified again."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text:
        return {}
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return {}
    if rows[0] != header:
        raise EcgdxError(f"--output {path} exists but is not an `ecgdx predict --format csv` file with these "
                         "columns; give another --output (or delete it) to start afresh")
    return {row[0]: row for row in rows[1:] if len(row) == len(header)}


def csv_line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


def write_sorted(path: Path, header: list[str], rows: dict[str, list[str]], order: list[str]) -> None:
    """Rewrite ``path`` with ``rows`` in ``order`` (a local run's order); rows of files no longer in
    the folder last, by path. Atomic: a temporary file renamed over it."""
    rank = {p: i for i, p in enumerate(order)}
    keys = sorted(rows, key=lambda p: (0, rank[p], "") if p in rank else (1, 0, p))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(csv_line(header))
        for key in keys:
            fh.write(csv_line(rows[key]))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    retry_later: int = 0
    interrupted: bool = False
    model_versions: set[str] = field(default_factory=set)
    rows: dict[str, list[str]] = field(default_factory=dict)

    def text(self) -> str:
        out = f"{self.done} done, {self.failed} failed, {self.skipped} skipped"
        if self.retry_later:
            them = "it" if self.retry_later == 1 else "them"
            out += f" ({self.retry_later} of them failed on a worker: not written, a rerun tries {them} again)"
        return out


@dataclass
class BatchRun:
    """One archive batch: ``inputs`` ((display path, file path), a local run's order) to ``output``.

    ``transport`` sends and collects (``CeleryTransport``, or a fake in tests); ``on_message`` gets the
    stderr lines; ``progress`` shows a tqdm bar."""

    transport: Transport
    inputs: list[tuple[str, str]]
    output: Path
    in_flight: int
    force: bool = False
    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    progress: bool = True
    on_message: Callable[[str], None] = lambda text: print(text, file=sys.stderr)
    poll_seconds: float = 0.5
    grace_seconds: float = INTERRUPT_GRACE_SECONDS
    # A picture not answered this long after it was sent (its message lost with a Redis restart, say)
    # counts as failed on a worker: no row, a rerun sends it again. None = wait for ever.
    task_timeout: float | None = TASK_TIMEOUT_SECONDS
    max_in_flight_seen: int = 0

    def run(self) -> BatchSummary:
        from ecgdx.prediction_table import csv_header

        if self.in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {self.in_flight}")
        header = csv_header()
        summary = BatchSummary()
        rows = read_done(self.output, header)
        summary.rows = rows
        order, todo, seen = [], [], set()
        for display, path in self.inputs:
            if display in seen:  # the same file named twice: one row
                continue
            seen.add(display)
            order.append(display)
            if display in rows:
                summary.skipped += 1
            else:
                todo.append((display, path))
        summary.model_versions |= {r[header.index("model_version")] for r in rows.values()} - {""}
        self.output.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.output.exists() or not rows
        if fresh:
            # No earlier rows: start the file (an earlier header-only or torn file is replaced).
            self.output.write_text(csv_line(header), encoding="utf-8")
        elif not self.output.read_text(encoding="utf-8").endswith("\n"):
            write_sorted(self.output, header, rows, order)  # drop a torn last line before appending
        bar = _bar(len(self.inputs), summary.skipped, self.progress and len(todo) > _PROGRESS_MIN)
        try:
            with self.output.open("a", encoding="utf-8", newline="") as out:
                self._loop(todo, header, out, summary, bar)
        finally:
            bar.close()
            write_sorted(self.output, header, rows, order)
        return summary

    # ---------------------------------------------------------------------------------- the loop

    def _loop(self, todo, header, out, summary: BatchSummary, bar) -> None:
        pending: dict[str, tuple[str, float]] = {}  # handle -> (display path, when it was sent)
        queue = iter(todo)
        exhausted = False

        def record(display: str, outcome: Any) -> None:
            if not isinstance(outcome, BaseException) and not (isinstance(outcome, dict)
                                                               and isinstance(outcome.get("row"), dict)):
                outcome = WorkerTaskError(f"unexpected answer {type(outcome).__name__}")
            if isinstance(outcome, BaseException):
                summary.failed += 1
                summary.retry_later += 1
                self._say(bar, f"ecgdx: '{display}': the worker failed ({outcome}); not written, a rerun tries "
                          "it again")
            else:
                self._write(display, outcome, header, out, summary, bar)
            bar.update(1)

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(pending) < self.in_flight:
                item = next(queue, None)
                if item is None:
                    exhausted = True
                    return
                display, path = item
                payload, error = self._payload(display, path)
                if error is not None:
                    from ecgdx.prediction_table import failure_row

                    record(display, {"row": dict(zip(header, _cells(failure_row(display, error)), strict=True)),
                                     "message": f"ecgdx: {error}"})
                    continue
                pending[self.transport.submit(payload)] = (display, time.monotonic())
                self.max_in_flight_seen = max(self.max_in_flight_seen, len(pending))

        def collect(timeout: float) -> None:
            for handle, outcome in self.transport.collect(list(pending), timeout):
                record(pending.pop(handle)[0], outcome)
            if self.task_timeout is not None:
                now = time.monotonic()
                late = [h for h, (_, sent) in pending.items() if now - sent > self.task_timeout]
                if late:
                    self.transport.cancel(late)
                for handle in late:
                    record(pending.pop(handle)[0], WorkerTaskError(f"no answer within {self.task_timeout:.0f} s"))

        try:
            fill()
            while pending:
                collect(self.poll_seconds)
                fill()
        except KeyboardInterrupt:
            summary.interrupted = True
            self._say(bar, f"ecgdx: interrupted: no more pictures sent; waiting up to {self.grace_seconds:.0f} s "
                      f"for the {len(pending)} in flight (Ctrl+C again to stop at once)")
            deadline = time.monotonic() + self.grace_seconds
            try:
                while pending and time.monotonic() < deadline:
                    collect(min(self.poll_seconds, 0.5))
            except KeyboardInterrupt:
                pass
            self.transport.cancel(list(pending))
            pending.clear()

    def _payload(self, display: str, path: str) -> tuple[dict[str, Any] | None, str | None]:
        """The message for one picture, or the error a local run would report for it."""
        from ecgdx.errors import InvalidImageError
        from ecgdx.page.preprocessing import (
            read_path,  # a local run's checks and messages (missing, empty ...)
        )

        label = f"'{Path(path)}'"
        try:
            size = os.stat(path).st_size
        except (OSError, ValueError):
            size = 0  # read_path names the problem as a local run does
        if size > self.max_bytes:
            return None, (f"{label}: is larger than the web app's upload limit of {self.max_bytes / 1e6:.0f} MB "
                          f"({size / 1e6:.1f} MB); classify it without --broker")
        try:
            data, _ = read_path(path, self.max_bytes)
        except InvalidImageError as exc:
            return None, str(exc)
        return {"path": display, "name": str(Path(path)), "data": base64.b64encode(data).decode("ascii"),
                "force": bool(self.force)}, None

    def _write(self, display: str, outcome: dict[str, Any], header, out, summary: BatchSummary, bar) -> None:
        row = (outcome or {}).get("row") or {}
        cells = [str(row.get(k, "") if row.get(k) is not None else "") for k in header]
        cells[0] = display  # the row is this file's, whatever the worker says
        out.write(csv_line(cells))
        out.flush()
        summary.rows[display] = cells
        if cells[header.index("error")]:
            summary.failed += 1
        else:
            summary.done += 1
        version = cells[header.index("model_version")]
        if version and version not in summary.model_versions:
            summary.model_versions.add(version)
            self._on_new_version(version)
        message = outcome.get("message")
        if message:
            self._say(bar, str(message))

    def _say(self, bar, text: str) -> None:
        """A line on stderr that does not break the progress bar."""
        if bar.enabled:
            bar.write(text, file=sys.stderr)
        else:
            self.on_message(text)

    def _on_new_version(self, version: str) -> None:
        """Hook: a model version not seen before in this CSV (``run_remote`` compares it with the local model)."""


def _cells(row: dict[str, Any]) -> list[str]:
    from ecgdx.prediction_table import csv_cells

    return csv_cells(row)


class _NoBar:
    enabled = False

    def update(self, n: int = 1) -> None: ...

    def write(self, text: str, file=None) -> None:
        print(text, file=file or sys.stderr)

    def close(self) -> None: ...


class _TqdmBar:
    enabled = True

    def __init__(self, total: int, initial: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, unit="img", file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def write(self, text: str, file=None) -> None:
        self._bar.write(text, file=file or sys.stderr)

    def close(self) -> None:
        self._bar.close()


def _bar(total: int, initial: int, enabled: bool):
    return _TqdmBar(total, initial) if enabled else _NoBar()


# --------------------------------------------------------------------------------------------------
# `ecgdx predict --broker`
# --------------------------------------------------------------------------------------------------


class _CliRun(BatchRun):
    local_version: str | None = None

    def _on_new_version(self, version: str) -> None:
        if self.local_version is None:
            self.local_version = _local_model_version()
        if self.local_version and version != self.local_version:
            self.on_message(f"ecgdx: note: the workers' model is {version}; this machine's default model is "
                            f"{self.local_version} (rows show the model that classified them)")


def _local_model_version() -> str:
    """This machine's default model version ('' when there is none or it cannot be read)."""
    try:
        from ecgdx.export import decode_metadata, open_session
        from ecgdx.inference import default_model_path

        session = open_session(default_model_path(), threads=1)
        return str(decode_metadata(session.get_modelmeta().custom_metadata_map, "the default model")
                   .get("model_version", ""))
    except Exception:  # noqa: BLE001 - only for a note on stderr
        return ""


def check_remote_args(args: argparse.Namespace) -> None:
    if args.format != "csv" or args.output is None:
        raise EcgdxError("--broker writes a CSV file that a rerun resumes: add --format csv --output FILE")
    if getattr(args, "explain", None):
        raise EcgdxError("--explain cannot be used with --broker (the heatmaps would be drawn on the workers)")
    if getattr(args, "measure", False):
        raise EcgdxError("--measure cannot be used with --broker yet; run it locally")
    if getattr(args, "model", None):
        raise EcgdxError("--model cannot be used with --broker: the workers use their own model "
                         "(`ecgdx worker --model`, or ECGDX_MODEL_PATH where they run)")


def run_remote(args: argparse.Namespace, transport: Transport | None = None) -> int:
    """`ecgdx predict PATH... --broker URL --format csv --output FILE`; exit codes as for local runs
    (0: at least one picture in the CSV was read; 1: none; 130: interrupted)."""
    from ecgdx.prediction_table import EXIT_NOTHING_READ, EXIT_OK, collect_inputs, csv_header

    check_remote_args(args)
    inputs = collect_inputs(args.paths)
    if not inputs:
        print("ecgdx: error: no pictures to classify", file=sys.stderr)
        return EXIT_NOTHING_READ
    own = transport is None
    if own:
        transport = CeleryTransport(args.broker, getattr(args, "result_backend", None))
    try:
        in_flight = getattr(args, "in_flight", None)
        if in_flight is None:
            workers, processes = transport.worker_processes() if hasattr(transport, "worker_processes") else (0, 0)
            in_flight = IN_FLIGHT_PER_PROCESS * max(processes, 1)
            if workers:
                print(f"ecgdx: {workers} worker{'s' if workers > 1 else ''} ({processes} processes) answered; "
                      f"up to {in_flight} pictures in flight", file=sys.stderr)
            else:
                print(f"ecgdx: no worker answered yet; pictures wait in the queue until one runs (`ecgdx worker`); "
                      f"up to {in_flight} in flight (--in-flight N)", file=sys.stderr)
        batch = _CliRun(transport=transport, inputs=inputs, output=args.output, in_flight=in_flight,
                        force=bool(getattr(args, "force", False)), max_bytes=max_upload_bytes())
        summary = batch.run()
    finally:
        if own:
            transport.close()
    if len(summary.model_versions) > 1:
        print(f"ecgdx: warning: {args.output} holds rows of {len(summary.model_versions)} model versions "
              f"({', '.join(sorted(summary.model_versions))}): see its model_version column", file=sys.stderr)
    print(f"ecgdx: {summary.text()}{'; interrupted' if summary.interrupted else ''}", file=sys.stderr)
    print(f"wrote {len(summary.rows)} results to {args.output}", file=sys.stderr)
    if summary.interrupted:
        return 130
    error = csv_header().index("error")
    return EXIT_OK if any(not row[error] for row in summary.rows.values()) else EXIT_NOTHING_READ


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    return url


__all__ = ["BatchRun", "worker_answer", "BatchSummary", "CeleryTransport", "Transport", "WorkerTaskError", "read_done",
           "run_remote", "write_sorted"]
