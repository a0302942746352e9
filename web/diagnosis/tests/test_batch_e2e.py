"""Archive batches for real: `ecgdx predict examples --broker URL` against redis-server and an `ecgdx worker`
process (the bundled model), compared with the local run (examples/golden.csv). Also the worker's task
itself, in-process: the local run's row, and not a single database query.

Skips only where redis-server is not installed (``realservices.redis_available``).
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diagnosis.tests.realservices import redis_available, redis_server
from diagnosis.tests.servers import clean_env, manage

WEB = Path(__file__).resolve().parents[2]
ROOT = WEB.parent
GOLDEN = ROOT / "examples" / "golden.csv"
CORRUPT = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # a PNG signature, then nothing readable


def _payload(path: Path, display: str) -> dict:
    import base64

    return {"path": display, "name": display, "data": base64.b64encode(path.read_bytes()).decode(), "force": False}


@pytest.mark.django_db
def test_the_task_gives_the_local_runs_row_and_touches_no_database(django_assert_num_queries):
    from diagnosis.batch_tasks import predict_page
    from ecgdx.predict import csv_header

    golden = GOLDEN.read_text().splitlines()
    line = next(x for x in golden if x.startswith("examples/mi/"))
    with django_assert_num_queries(0):
        answer = predict_page.run(_payload(ROOT / "examples" / "mi" / "MI_35.png", "examples/mi/MI_35.png"))
        broken = predict_page.run({"path": "x/bad.png", "name": "x/bad.png", "data": "aGVsbG8=", "force": False})
    assert ",".join(answer["row"][k] for k in csv_header()) == line
    assert answer["message"] is None and answer["model_version"] == answer["row"]["model_version"]
    assert broken["row"]["error"].startswith("'x/bad.png': ") and broken["row"]["label"] == ""
    assert broken["message"] == f"ecgdx: {broken['row']['error']}"


def _wait_for_worker(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    from celery import Celery

    app = Celery("ecgdx-test", broker=url, set_as_current=False)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if app.control.ping(timeout=0.5):
                return
            time.sleep(0.5)
    finally:
        app.close()
    raise AssertionError(f"the worker did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def worker_and_redis(tmp_path):
    reason = redis_available()
    if reason:
        pytest.skip(reason)
    data = tmp_path / "data"
    with redis_server(tmp_path) as redis:
        env = clean_env(ECGDX_BROKER_URL=redis.url, DJANGO_SETTINGS_MODULE="ecgdx_web.settings.local",
                        ECGDX_WEB_DATA_DIR=str(data), DEBUG="0")
        manage(env, "migrate", "--noinput", "-v", "0")
        log = tmp_path / "worker.log"
        proc = subprocess.Popen([sys.executable, "-m", "ecgdx", "worker", "--concurrency", "1", "--nice", "0"],
                                cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            started = time.monotonic()
            _wait_for_worker(redis.url, proc, log)
            print(f"\nworker ready after {time.monotonic() - started:.1f} s", file=sys.stderr)
            yield redis.url, data, log
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def test_predict_with_a_broker_writes_the_local_csv_resumes_and_reports_errors(worker_and_redis, tmp_path,
                                                                              monkeypatch, capsys):
    from ecgdx.cli import main

    url, data, log = worker_and_redis
    # A copy of examples/, so that rows read 'examples/...' as in golden.csv and a corrupt file can be added.
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("*.csv", "*.md"))
    monkeypatch.chdir(work)
    out = tmp_path / "remote.csv"
    command = ["predict", "examples", "--broker", url, "--format", "csv", "--output", str(out)]

    started = time.monotonic()
    assert main(command) == 0, log.read_text()[-3000:]
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    with capsys.disabled():
        print(f"\n4 examples, 1 worker (concurrency 1): {elapsed:.1f} s\n{err}")
    assert out.read_text() == GOLDEN.read_text()
    assert "4 done, 0 failed, 0 skipped" in err
    assert "1 worker (1 processes) answered" in err

    # A rerun sends nothing and leaves the file as it was.
    assert main(command) == 0
    assert "0 done, 0 failed, 4 skipped" in capsys.readouterr().err
    assert out.read_text() == GOLDEN.read_text()

    # A corrupt file: one error row (the local run's), the four rows untouched, in the local run's order.
    (work / "examples" / "mi" / "MI_broken.png").write_bytes(CORRUPT)
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "0 done, 1 failed, 4 skipped" in err
    local = tmp_path / "local.csv"
    assert main(["predict", "examples", "--format", "csv", "--output", str(local)]) == 0
    capsys.readouterr()
    assert out.read_text() == local.read_text()
    rows = out.read_text().splitlines()
    assert [r for r in rows if r not in GOLDEN.read_text().splitlines()] == [rows[4]]
    assert rows[4] == ("examples/mi/MI_broken.png,,,,,,,,,,,'examples/mi/MI_broken.png': the PNG file is truncated "
                       "or corrupt (incomplete download or copy?); upload the complete file,,,,,,")
    assert "ecgdx: 'examples/mi/MI_broken.png': the PNG file is truncated" in err

    # The worker kept no analysis and no picture: archive batches are not users' analyses.
    with contextlib.closing(sqlite3.connect(data / "db.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM diagnosis_analysis").fetchone()[0] == 0
    private = data / "private"
    assert not private.exists() or not any(p.is_file() for p in private.rglob("*"))
