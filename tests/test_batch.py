"""Archive batches (`ecgdx predict DIR --broker URL`, ecgdx.batch) without a broker: an in-process fake
transport stands in for Celery and the workers. Resume, row order, error rows, the in-flight bound,
Ctrl+C, and (with the bundled model) the same CSV as a local run. The real broker and worker:
web/diagnosis/tests/test_batch_e2e.py."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from ecgdx import batch
from ecgdx.batch import BatchRun, WorkerTaskError, read_done, run_remote, worker_answer
from ecgdx.cli import build_parser, main
from ecgdx.errors import EcgdxError
from ecgdx.labels import CLASS_KEYS
from ecgdx.predict import collect_inputs, csv_cells, csv_header, failure_row

REPO = Path(__file__).resolve().parents[1]
HEADER = csv_header()
ERROR = HEADER.index("error")


def fake_row(payload: dict) -> dict:
    """What a worker answers, without a model: 'bad...' bytes are unreadable, others 'normal'."""
    data = base64.b64decode(payload["data"])
    if data.startswith(b"bad"):
        error = f"'{payload['name']}': not an image"
        return {"row": dict(zip(HEADER, csv_cells(failure_row(payload["path"], error)), strict=True)),
                "message": f"ecgdx: {error}", "model_version": None}
    probs = {k: 0.25 for k in CLASS_KEYS}
    row = {"path": payload["path"], "label": "normal", "probabilities": probs, "balanced_probabilities": probs,
           "gate": {"ok": True, "score": 1.0, "reasons": []}, "forced": False, "model_version": "fake-1",
           "error": None, "decision_rule": "argmax"}
    return {"row": dict(zip(HEADER, csv_cells(row), strict=True)), "message": None, "model_version": "fake-1"}


class FakeTransport:
    """Runs ``answer`` in-process. Each collect finishes up to ``per_collect`` tasks, newest first (so that
    rows come back out of order); ``interrupt_after``: Ctrl+C once that many have finished."""

    def __init__(self, answer=fake_row, per_collect: int = 2, interrupt_after: int | None = None,
                 on_finish=None, stuck: frozenset[str] = frozenset()):
        self.answer, self.per_collect, self.interrupt_after = answer, per_collect, interrupt_after
        self.on_finish, self.stuck = on_finish, stuck
        self.pending: dict[str, dict] = {}
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.finished = 0
        self.max_pending = 0
        self._n = 0

    def submit(self, payload: dict) -> str:
        self._n += 1
        handle = f"task-{self._n}"
        self.pending[handle] = payload
        self.submitted.append(payload["path"])
        self.max_pending = max(self.max_pending, len(self.pending))
        return handle

    def collect(self, handles: list[str], timeout: float) -> list[tuple[str, object]]:
        if self.interrupt_after is not None and self.finished >= self.interrupt_after:
            self.interrupt_after = None
            raise KeyboardInterrupt
        done = []
        live = [h for h in handles if self.pending[h]["path"] not in self.stuck]  # stuck: lost messages
        for handle in sorted(live, key=lambda h: -int(h.split("-")[1]))[: self.per_collect]:
            payload = self.pending.pop(handle)
            try:
                outcome = self.answer(payload)
            except Exception as exc:  # noqa: BLE001 - what a failed task looks like to the client
                outcome = WorkerTaskError(f"{type(exc).__name__}: {exc}")
            done.append((handle, outcome))
            self.finished += 1
            if self.on_finish:
                self.on_finish(payload)
        return done

    def cancel(self, handles: list[str]) -> None:
        self.cancelled.extend(handles)
        for h in handles:
            self.pending.pop(h, None)

    def close(self) -> None:
        pass


def make_folder(root: Path, names: list[str], content: bytes = b"png") -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


NAMES = ["b/2.png", "a.png", "b/10.png", "c/z.jpg", "b/1.png", "a2.png"]


def run(folder: Path, out: Path, transport: FakeTransport, **kw) -> batch.BatchSummary:
    messages: list[str] = []
    kw.setdefault("in_flight", 3)
    summary = BatchRun(transport=transport, inputs=collect_inputs([str(folder)]), output=out,
                       on_message=messages.append, poll_seconds=0.01, grace_seconds=0.5, **kw).run()
    summary.messages = messages
    return summary


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_rows_come_back_in_any_order_and_end_in_the_local_runs_order(tmp_path):
    folder = make_folder(tmp_path / "scans", NAMES)
    out = tmp_path / "out.csv"
    seen: list[list[str]] = []
    transport = FakeTransport(on_finish=lambda _: seen.append(lines(out)))
    summary = run(folder, out, transport)
    expected = [p for p, _ in collect_inputs([str(folder)])]
    rows = [line.split(",")[0] for line in lines(out)[1:]]
    assert rows == expected  # sorted like a local run at the end
    assert lines(out)[0] == ",".join(HEADER)
    # During the run rows were appended (and flushed) as they finished, in that (other) order.
    appended = [line.split(",")[0] for line in seen[-1][1:]]
    assert len(appended) >= len(NAMES) - 2 and set(appended) < set(expected)
    assert appended != sorted(appended, key=expected.index)
    assert (summary.done, summary.failed, summary.skipped) == (len(NAMES), 0, 0)


def test_in_flight_is_bounded(tmp_path):
    folder = make_folder(tmp_path / "scans", [f"p{i:03d}.png" for i in range(40)])
    transport = FakeTransport(per_collect=1)
    run(folder, tmp_path / "out.csv", transport, in_flight=3)
    assert transport.max_pending == 3
    assert len(transport.submitted) == 40


def test_rerun_skips_what_is_in_the_csv_and_keeps_a_torn_last_line_out(tmp_path):
    folder = make_folder(tmp_path / "scans", NAMES)
    out = tmp_path / "out.csv"
    run(folder, out, FakeTransport())
    full = out.read_text()
    # An interrupted run: three rows missing, the first of them cut while it was written.
    full_lines = full.splitlines()
    out.write_text("\n".join(full_lines[:4]) + "\n" + full_lines[4][:20], encoding="utf-8")
    missing = {line.split(",")[0] for line in full_lines[4:]}
    transport = FakeTransport()
    summary = run(folder, out, transport)
    assert set(transport.submitted) == missing
    assert (summary.done, summary.skipped) == (len(missing), len(NAMES) - len(missing))
    assert out.read_text() == full
    # And once complete, a rerun sends nothing.
    transport = FakeTransport()
    summary = run(folder, out, transport)
    assert transport.submitted == [] and summary.skipped == len(NAMES) and out.read_text() == full


def test_error_rows_too_large_files_and_failed_tasks(tmp_path):
    folder = make_folder(tmp_path / "scans", ["a.png", "c.png"])
    (folder / "bad.png").write_bytes(b"bad bytes")
    (folder / "empty.png").write_bytes(b"")
    (folder / "huge.png").write_bytes(b"x" * 2000)
    (folder / "crash.png").write_bytes(b"crash")

    def answer(payload):
        if base64.b64decode(payload["data"]) == b"crash":
            raise RuntimeError("worker lost")
        return fake_row(payload)

    out = tmp_path / "out.csv"
    transport = FakeTransport(answer=answer)
    summary = run(folder, out, transport, max_bytes=1000)
    rows = read_done(out, HEADER)
    assert not rows[str(folder / "a.png")][ERROR] and not rows[str(folder / "c.png")][ERROR]
    assert rows[str(folder / "bad.png")][ERROR] == f"'{folder / 'bad.png'}': not an image"
    # Read here, with a local run's own check and words; never sent.
    assert rows[str(folder / "empty.png")][ERROR] == f"'{folder / 'empty.png'}': is empty (0 bytes); it is not an image"
    assert "upload limit" in rows[str(folder / "huge.png")][ERROR]
    assert str(folder / "huge.png") not in transport.submitted
    assert str(folder / "empty.png") not in transport.submitted
    # A task that failed on its worker writes no row: a rerun tries it again.
    assert str(folder / "crash.png") not in rows
    assert (summary.done, summary.failed, summary.retry_later) == (2, 4, 1)
    assert any("a rerun tries it again" in m for m in summary.messages)
    assert any("not an image" in m for m in summary.messages)
    transport = FakeTransport()
    summary = run(folder, out, transport, max_bytes=1000)
    assert transport.submitted == [str(folder / "crash.png")]
    assert summary.skipped == 5 and summary.done == 1


def test_a_picture_never_answered_is_given_up_and_sent_again_by_a_rerun(tmp_path):
    folder = make_folder(tmp_path / "scans", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out.csv"
    lost = str(folder / "b.png")
    transport = FakeTransport(stuck=frozenset({lost}))
    summary = run(folder, out, transport, task_timeout=0.2)
    assert (summary.done, summary.failed, summary.retry_later) == (2, 1, 1)
    assert lost not in read_done(out, HEADER) and transport.cancelled == ["task-2"]
    assert any("no answer within" in m for m in summary.messages)
    transport = FakeTransport()
    summary = run(folder, out, transport)
    assert transport.submitted == [lost] and summary.skipped == 2


def test_ctrl_c_stops_sending_and_keeps_what_finished(tmp_path):
    folder = make_folder(tmp_path / "scans", [f"p{i:02d}.png" for i in range(20)])
    out = tmp_path / "out.csv"
    transport = FakeTransport(per_collect=1, interrupt_after=5)
    summary = run(folder, out, transport, in_flight=4)
    assert summary.interrupted
    assert len(transport.submitted) < 20
    rows = read_done(out, HEADER)
    # The ones in flight at Ctrl+C finished within the grace period; nothing more was sent.
    assert len(rows) == len(transport.submitted) == summary.done
    assert [line.split(",")[0] for line in lines(out)[1:]] == sorted(rows)
    transport = FakeTransport()
    summary = run(folder, out, transport)
    assert summary.skipped == len(rows) and summary.done == 20 - len(rows)


def test_an_output_that_is_not_ours_is_refused(tmp_path):
    folder = make_folder(tmp_path / "scans", ["a.png"])
    out = tmp_path / "out.csv"
    out.write_text("name,value\nx,1\n")
    with pytest.raises(EcgdxError, match="not an `ecgdx predict --format csv` file"):
        run(folder, out, FakeTransport())
    assert out.read_text() == "name,value\nx,1\n"


@pytest.mark.parametrize("extra, message", [
    ([], "--format csv --output FILE"),
    (["--format", "csv"], "--format csv --output FILE"),
    (["--format", "csv", "--output", "x.csv", "--measure"], "--measure"),
    (["--format", "csv", "--output", "x.csv", "--model", "m.onnx"], "workers use their own model"),
])
def test_broker_needs_a_csv_output_and_refuses_local_only_options(extra, message, tmp_path, capsys):
    code = main(["predict", str(tmp_path), "--broker", "redis://127.0.0.1:1/0", *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_without_celery_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)
    with pytest.raises(EcgdxError, match=r"pip install 'ecgdx\[web\]'"):
        batch.CeleryTransport("redis://127.0.0.1:1/0")


def test_importing_the_batch_client_loads_neither_celery_nor_django():
    code = ("import sys, ecgdx.batch, ecgdx.predict, ecgdx.cli; "
            "bad = [m for m in ('celery', 'django', 'kombu', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture(scope="module")
def bundled_predictor():
    from ecgdx.errors import ModelError
    from ecgdx.inference import Predictor

    try:
        return Predictor()
    except ModelError as exc:
        pytest.skip(f"no bundled model: {exc}")


def test_same_csv_as_the_local_run_with_the_real_model(bundled_predictor, tmp_path, monkeypatch, capsys):
    """The worker's code path (worker_answer) in-process: examples/ gives examples/golden.csv, and an
    unreadable file gets the local run's own error row."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "remote.csv"
    args = build_parser().parse_args(["predict", "examples", "--broker", "redis://unused", "--format", "csv",
                                      "--output", str(out), "--in-flight", "2"])
    transport = FakeTransport(answer=lambda p: worker_answer(p, bundled_predictor))
    assert run_remote(args, transport=transport) == 0
    assert out.read_text() == (REPO / "examples" / "golden.csv").read_text()
    assert "4 done, 0 failed, 0 skipped" in capsys.readouterr().err

    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "ok.png").write_bytes((REPO / "examples" / "mi" / "MI_35.png").read_bytes())
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    local = tmp_path / "local.csv"
    assert main(["predict", str(folder), "--format", "csv", "--output", str(local)]) == 0
    args = build_parser().parse_args(["predict", str(folder), "--broker", "redis://unused", "--format", "csv",
                                      "--output", str(out.with_name("remote2.csv"))])
    transport = FakeTransport(answer=lambda p: worker_answer(p, bundled_predictor))
    assert run_remote(args, transport=transport) == 0
    assert out.with_name("remote2.csv").read_text() == local.read_text()
    assert "1 done, 1 failed, 0 skipped" in capsys.readouterr().err


def test_a_worker_model_other_than_the_local_default_is_said_on_stderr(bundled_predictor, tmp_path, capsys):
    folder = make_folder(tmp_path / "scans", ["a.png"])
    args = build_parser().parse_args(["predict", str(folder), "--broker", "redis://unused", "--format", "csv",
                                      "--output", str(tmp_path / "out.csv")])
    assert run_remote(args, transport=FakeTransport()) == 0
    err = capsys.readouterr().err
    assert f"the workers' model is fake-1; this machine's default model is {bundled_predictor.model_version}" in err
    assert read_done(tmp_path / "out.csv", HEADER)[str(folder / "a.png")][HEADER.index("model_version")] == "fake-1"
