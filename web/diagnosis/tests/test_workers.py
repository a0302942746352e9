"""Analyses on real worker processes, and what happens when a worker, the broker or the database fails.

Everything here is a real process on 127.0.0.1: redis-server, PostgreSQL (``realservices``), gunicorn
with the production settings, and `ecgdx worker` processes (each in its own session, so that a test
can SIGKILL or SIGSTOP the whole worker: the Celery main process and its pool child). The workers use
the real bundled ONNX model. One Redis + PostgreSQL + gunicorn serves the whole module (a fresh user
per test); state is checked through the API and, where the API cannot tell, with SQL on DATABASE_URL.

Skips, saying why, only when redis-server, PostgreSQL or (for the browser test) Chromium is not
installed; `.ci/run` installs them. docs/reliability.md ("Workers, broker and database faults")
describes these tests and their results.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from diagnosis.tests.realservices import postgres_available, postgres_server, redis_available, redis_server
from diagnosis.tests.servers import clean_env, fetch, free_port, manage, multipart, running

WEB = Path(__file__).resolve().parents[2]
ROOT = WEB.parent
EXAMPLES = sorted((ROOT / "examples").glob("*/*.png"))
NORMAL = ROOT / "examples" / "normal" / "Normal_100.png"
GOOD_KEY = "w0rk3rs-" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ" * 2
LABELS = {"normal", "mi", "abnormal_heartbeat", "history_of_mi"}  # the API's labels
DISPLAY_NAMES = {"Normal", "Myocardial Infarction", "Abnormal Heartbeat", "History of MI"}  # the pages
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# The fault settings of every process of the stack (the web app and the workers read the same ones):
# a hard limit of 20 s per analysis, so that a `running` analysis whose worker died is sent again
# after 20 + 30 s; lost messages of `queued` ones after 5 s; each worker sweeps every 2 s.
FAULT_SETTINGS = {"ECGDX_TASK_TIME_LIMIT": "20", "ECGDX_RECOVERY_INTERVAL_SECONDS": "2",
                  "ECGDX_REQUEUE_AFTER_SECONDS": "5"}


def timings(request) -> dict:
    """Numbers the tests measured, printed at the end (docs/reliability.md quotes them)."""
    return request.config.stash.setdefault(_TIMINGS, {})


_TIMINGS = pytest.StashKey[dict]()


# ------------------------------------------------------------------------------------------ processes


class Worker:
    """One `ecgdx worker` process (Celery prefork, concurrency 1) in its own session and process group."""

    def __init__(self, env: dict, log: Path) -> None:
        self.log = log
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecgdx", "worker", "--concurrency", "1", "--nice", "0", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)  # the whole group: the main process and its pool child

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            self.signal(signal.SIGCONT)  # in case a test left it stopped
            self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Stack:
    """Redis, PostgreSQL, gunicorn (production settings) and the current worker."""

    base: str
    env: dict
    data_dir: Path
    logs: Path
    redis: object
    pg: object
    gunicorn: subprocess.Popen | None = None
    worker: Worker | None = None
    workers_started: int = 0
    _users: int = field(default=0)

    # -- workers
    def start_worker(self) -> Worker:
        self.workers_started += 1
        self.worker = Worker(self.env, self.logs / f"worker-{self.workers_started}.log")
        return self.worker

    def ensure_worker(self) -> Worker:
        if self.worker is None or not self.worker.alive():
            self.start_worker()
        return self.worker

    def diagnostics(self) -> str:
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-2500:]}")
        return "\n".join(parts)

    # -- SQL on DATABASE_URL
    def sql(self, query: str, *params):
        import psycopg

        with psycopg.connect(self.pg.url, connect_timeout=5) as conn, conn.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description else None

    def new_user(self) -> str:
        """A fresh user (password hashed as Django does) and an API token for it."""
        from django.contrib.auth.hashers import PBKDF2PasswordHasher

        self._users += 1
        username = f"worker-test-{self._users}-{uuid.uuid4().hex[:6]}"
        password = "pw-" + uuid.uuid4().hex
        hasher = PBKDF2PasswordHasher()
        encoded = hasher.encode(password, hasher.salt())
        self.sql("INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, "
                 "is_active, date_joined) VALUES (%s, false, %s, '', '', '', false, true, now())", encoded, username)
        self.last_password = password
        status, _, body = fetch(f"{self.base}/api/v1/auth/token", method="POST",
                                data=json.dumps({"username": username, "password": password}).encode(),
                                headers={"Content-Type": "application/json"})
        assert status == 200, body
        self.last_username = username
        return json.loads(body)["token"]

    # -- API
    def upload(self, token: str, content: bytes, *, name: str = "ecg.png", wait: int | None = None, timeout=90):
        body, content_type = multipart("image", name, content)
        headers = {"Content-Type": content_type, "Authorization": f"Token {token}"}
        if wait:
            headers["Prefer"] = f"wait={wait}"
        status, headers, answer = fetch(f"{self.base}/api/v1/predictions", data=body, headers=headers,
                                        timeout=timeout)
        return status, headers, json.loads(answer) if answer else None

    def get(self, token: str, analysis_id: str, timeout: float = 15):
        status, _, answer = fetch(f"{self.base}/api/v1/predictions/{analysis_id}",
                                  headers={"Authorization": f"Token {token}"}, timeout=timeout)
        return status, json.loads(answer) if answer else None

    def wait_for(self, token: str, ids, *, statuses=("done", "failed"), timeout: float = 120, poll: float = 0.5):
        """{id: the prediction's JSON} once every one of ``ids`` has a status in ``statuses``; 503s and
        dropped connections (a fault in progress) are waited out."""
        ids = list(ids)
        deadline = time.monotonic() + timeout
        latest: dict = {}
        while True:
            for analysis_id in ids:
                if latest.get(analysis_id, {}).get("status") in statuses:
                    continue
                try:
                    status, answer = self.get(token, analysis_id)
                except OSError:
                    continue
                if status == 200:
                    latest[analysis_id] = answer
            if all(latest.get(i, {}).get("status") in statuses for i in ids):
                return latest
            if time.monotonic() > deadline:
                states = {i: (latest.get(i) or {}).get("status") for i in ids}
                raise AssertionError(f"not {statuses} within {timeout:.0f} s: {states}\n{self.diagnostics()}")
            time.sleep(poll)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    for reason in (redis_available(), postgres_available()):
        if reason:
            print(reason)
            pytest.skip(reason)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    tmp = tmp_path_factory.mktemp("workers")
    logs = tmp / "logs"
    logs.mkdir()
    with contextlib.ExitStack() as cleanup:
        redis = cleanup.enter_context(redis_server(tmp))
        pg = cleanup.enter_context(postgres_server())
        data_dir = tmp / "data"
        env = clean_env(
            DJANGO_SETTINGS_MODULE="ecgdx_web.settings.production", SECRET_KEY=GOOD_KEY,
            ALLOWED_HOSTS="127.0.0.1,localhost", SECURE_SSL_REDIRECT="0", ECGDX_WEB_DATA_DIR=str(data_dir),
            DATABASE_URL=pg.url, ECGDX_BROKER_URL=redis.url, LOG_LEVEL="INFO", **FAULT_SETTINGS)
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [str(gunicorn), "--chdir", str(WEB), "--workers", "2", "--threads", "4", "--timeout", "120",
               "--bind", f"127.0.0.1:{port}", "--error-logfile", str(logs / "gunicorn.log"),
               "ecgdx_web.wsgi"]
        stack = Stack(base=base, env=env, data_dir=data_dir, logs=logs, redis=redis, pg=pg)
        proc = cleanup.enter_context(running(cmd, url=f"{base}/api/v1/health", env=env, timeout=120))
        stack.gunicorn = proc
        cleanup.callback(lambda: stack.worker and stack.worker.stop())
        stack.start_worker()
        yield stack


@pytest.fixture
def worker(stack) -> Worker:
    """The stack's worker, started again if an earlier test left none."""
    return stack.ensure_worker()


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def digitizations(stack: Stack, analysis_id: str) -> int:
    return stack.sql("SELECT count(*) FROM diagnosis_digitization WHERE analysis_id = %s", analysis_id)[0][0]


def fake_picture(kind: str) -> bytes:
    """A valid PNG that is no ECG page: uniform grey, or random noise."""
    import cv2
    import numpy as np

    if kind == "grey":
        pixels = np.full((1100, 1500), 200, np.uint8)
    else:
        pixels = np.random.default_rng(15).integers(0, 256, (1100, 1500), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


# ---------------------------------------------------------------------------------------------- tests


def test_api_upload_is_analysed_by_a_worker(stack, worker, request):
    token = stack.new_user()
    started = time.monotonic()
    status, headers, answer = stack.upload(token, NORMAL.read_bytes(), name="Normal_100.png")
    assert status == 202, answer
    assert answer["status"] in {"queued", "running"} and headers["Location"].endswith(f"/predictions/{answer['id']}")
    done = stack.wait_for(token, [answer["id"]], timeout=120)[answer["id"]]
    timings(request)["first analysis (s, worker start included)"] = round(time.monotonic() - started, 1)
    assert done["status"] == "done", done
    assert done["label"] in LABELS and done["attempts"] == 1 and done["failure"] is None
    assert done["digitization"] and done["digitization"]["status"] in {"ok", "failed"}
    assert digitizations(stack, answer["id"]) == 1
    status, headers, pdf = fetch(done["report_url"], headers={"Authorization": f"Token {token}"})
    assert status == 200 and pdf.startswith(b"%PDF") and len(pdf) > 5_000

    started = time.monotonic()
    status, headers, answer = stack.upload(token, NORMAL.read_bytes(), wait=60)
    timings(request)["Prefer: wait=60 upload (s)"] = round(time.monotonic() - started, 1)
    assert status == 201, answer
    assert answer["status"] == "done" and answer["label"] in LABELS and headers.get("Preference-Applied") == "wait"
    row = stack.sql("SELECT status, attempts, label FROM diagnosis_analysis WHERE id = %s", answer["id"])
    assert row == [("done", 1, answer["label"])]


def test_browser_pending_page_fills_itself_in(stack, worker):
    if CHROMIUM is None:
        reason = "Chromium is not installed (apt-get install chromium chromium-driver); browser test skipped"
        print(reason)
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (web-test extra) is missing")
    stack.new_user()
    username, password = stack.last_username, stack.last_password
    base = stack.base.replace("127.0.0.1", "localhost")  # a secure context: the production cookies are Secure
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(base + "/")
            assert "/accounts/login/" in page.url
            page.get_by_label("User name").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(base + "/")
            worker.signal(signal.SIGSTOP)  # no analysis until the pending page is seen and marked
            try:
                page.get_by_label("Choose a picture or drag it here").set_input_files(str(NORMAL))
                page.get_by_role("button", name="Analyse").click()
                page.wait_for_url(re.compile(r".*/analyses/[0-9a-f-]{36}/$"))
                pending_url = page.url
                assert page.locator("#analysis-status").is_visible()
                assert page.locator("#analysis-progress").count() == 1
                assert "Queued" in page.locator("#status-stage").inner_text()
                assert page.locator("#predicted-label").count() == 0
                page.evaluate("() => { window.__ecgdxNoReload = 'still the same page'; }")
                navigations = []
                page.on("framenavigated", lambda frame: frame == page.main_frame and navigations.append(frame.url))
            finally:
                worker.signal(signal.SIGCONT)
            page.wait_for_selector("#predicted-label", timeout=120_000)
            assert page.locator("#predicted-label").inner_text() in DISPLAY_NAMES
            assert page.evaluate("() => window.__ecgdxNoReload") == "still the same page"  # no reload
            assert navigations == [] and page.url == pending_url
            assert page.locator("#analysis-status").count() == 0
        finally:
            browser.close()


def test_poison_picture_fails_once_and_the_queue_goes_on(stack, worker):
    token = stack.new_user()
    for kind in ("grey", "noise"):
        status, _, answer = stack.upload(token, fake_picture(kind), name=f"{kind}.png", wait=60)
        assert status == 422, (kind, answer)
        error = answer["error"]
        assert error["code"] == "not_an_ecg" and error["message"] and error["details"]["status"] == "failed"
        status, detail = stack.get(token, error["details"]["id"])
        assert status == 200 and detail["status"] == "failed" and detail["attempts"] == 1, detail
        assert detail["failure"]["code"] == "not_an_ecg" and detail["failure"]["status"] == 422
        assert "ECG" in detail["failure"]["message"]
        assert digitizations(stack, error["details"]["id"]) == 0
    status, _, answer = stack.upload(token, NORMAL.read_bytes(), wait=60)
    assert status == 201 and answer["status"] == "done" and answer["label"] in LABELS, answer
    assert stack.sql("SELECT status, attempts FROM diagnosis_analysis a JOIN auth_user u ON u.id = a.owner_id "
                     "WHERE u.username = %s ORDER BY a.created_at", stack.last_username) == [
        ("failed", 1), ("failed", 1), ("done", 1)]


def test_worker_killed_mid_analysis_is_recovered(stack, worker, request):
    token = stack.new_user()
    wait_until(lambda: "ready" in worker.tail(20000), 90, "the worker did not get ready")
    status, _, answer = stack.upload(token, NORMAL.read_bytes())
    assert status == 202
    analysis_id = answer["id"]
    wait_until(lambda: stack.get(token, analysis_id)[1]["status"] == "running", 60, "never running", poll=0.05)
    worker.kill()  # SIGKILL to the main process and its pool child, mid-analysis
    killed = time.monotonic()
    assert stack.sql("SELECT status, attempts FROM diagnosis_analysis WHERE id = %s", analysis_id) == [
        ("running", 1)]
    stack.start_worker()
    done = stack.wait_for(token, [analysis_id], timeout=150)[analysis_id]
    recovered_after = time.monotonic() - killed
    timings(request)["SIGKILL -> done (s)"] = round(recovered_after, 1)
    # The recovery sweep sends it again 20 + 30 s after it started; Redis itself would give the unacked
    # message back only after its visibility timeout (20 + 60 s), and only to a worker that looks then.
    assert recovered_after < 80, f"recovered after {recovered_after:.0f} s: not by the recovery sweep\n" + \
        stack.worker.tail()
    assert done["status"] == "done" and done["label"] in LABELS, done
    assert done["attempts"] >= 2
    timings(request)["SIGKILL attempts"] = done["attempts"]
    assert digitizations(stack, analysis_id) == 1
    status, _, pdf = fetch(done["report_url"], headers={"Authorization": f"Token {token}"})
    assert status == 200 and pdf.startswith(b"%PDF")


def test_redis_restart_loses_no_upload(stack, worker, request):
    token = stack.new_user()
    wait_until(lambda: "ready" in worker.tail(20000), 90, "the worker did not get ready")
    ids = []
    for i in range(6):
        status, _, answer = stack.upload(token, EXAMPLES[i % len(EXAMPLES)].read_bytes())
        assert status == 202, answer
        ids.append(answer["id"])
    queued = stack.sql("SELECT count(*) FROM diagnosis_analysis WHERE id = ANY(%s::uuid[]) AND status = 'queued'",
                       ids)[0][0]
    assert queued >= 2, "the restart must find queued analyses (their messages are only in Redis)"
    # Redis keeps nothing on disk (realservices): the restart loses every queued message.
    stack.redis.stop()
    down = time.monotonic()
    status, _, answer = stack.upload(token, NORMAL.read_bytes())  # the broker is down: stored, not sent
    assert status == 202, answer
    ids.append(answer["id"])
    time.sleep(max(0.0, 2.0 - (time.monotonic() - down)))
    stack.redis.start()
    restarted = time.monotonic()
    finished = stack.wait_for(token, ids, timeout=180)
    timings(request)["Redis restart: queued at the restart"] = queued
    timings(request)["Redis restart: restart -> all 7 done (s)"] = round(time.monotonic() - restarted, 1)
    timings(request)["Redis restart: attempts"] = sorted(f["attempts"] for f in finished.values())
    timings(request)["Redis restart: worker log lines"] = [
        line for line in stack.worker.tail(200_000).splitlines() if "recovery:" in line or "not sent" in line]
    assert {f["status"] for f in finished.values()} == {"done"}, finished
    assert all(f["label"] in LABELS for f in finished.values())
    assert stack.sql("SELECT count(*) FROM diagnosis_analysis a JOIN auth_user u ON u.id = a.owner_id "
                     "WHERE u.username = %s", stack.last_username) == [(7,)]
    assert [digitizations(stack, i) for i in ids] == [1] * 7


def test_database_outage_answers_503_and_loses_nothing(stack, worker, request):
    token = stack.new_user()
    wait_until(lambda: "ready" in worker.tail(20000), 90, "the worker did not get ready")
    ids = []
    for picture in (NORMAL, EXAMPLES[0]):
        status, _, answer = stack.upload(token, picture.read_bytes())
        assert status == 202
        ids.append(answer["id"])
    wait_until(lambda: stack.get(token, ids[0])[1]["status"] == "running", 60, "never running", poll=0.05)
    uploads = stack.data_dir / "private" / "uploads"
    files_before = sorted(p.name for p in uploads.rglob("*") if p.is_file())
    stack.pg.stop()
    stopped = time.monotonic()
    try:
        status, headers, answer = stack.upload(token, NORMAL.read_bytes())
        assert status == 503, answer
        assert answer["error"]["code"] == "service_unavailable" and headers.get("Retry-After")
        status, answer = stack.get(token, ids[0])
        assert status == 503 and answer["error"]["code"] == "service_unavailable"
        assert sorted(p.name for p in uploads.rglob("*") if p.is_file()) == files_before  # no orphan picture
        time.sleep(max(0.0, 5.0 - (time.monotonic() - stopped)))
    finally:
        stack.pg.start()
    restarted = time.monotonic()
    timings(request)["database down (s)"] = round(restarted - stopped, 1)
    finished = stack.wait_for(token, ids, timeout=150)
    timings(request)["database back -> both finished (s)"] = round(time.monotonic() - restarted, 1)
    timings(request)["database outage: statuses, attempts"] = [(f["status"], f["attempts"]) for f in finished.values()]
    for f in finished.values():
        assert f["status"] in {"done", "failed"}, f
        if f["status"] == "failed":
            assert f["failure"]["code"] and f["failure"]["message"], f
        else:
            assert f["label"] in LABELS
    rows = stack.sql("SELECT a.id::text, a.status FROM diagnosis_analysis a JOIN auth_user u ON u.id = a.owner_id "
                     "WHERE u.username = %s", stack.last_username)
    assert sorted(r[0] for r in rows) == sorted(ids)  # the refused upload left no row
    assert all(digitizations(stack, i) == (1 if finished[i]["status"] == "done" else 0) for i in ids)


def test_ecgdx_serve_with_its_own_worker_alone(tmp_path, request):
    """No Redis, no PostgreSQL: SQLite and the queue folder in the data directory, one worker of serve's own."""
    data_dir = tmp_path / "data"
    env = clean_env(ECGDX_WEB_DATA_DIR=str(data_dir))
    for name in ("ECGDX_BROKER_URL", "ECGDX_BROKER_DIR", "ECGDX_PRIVATE_MEDIA_ROOT"):
        env.pop(name, None)
    create = ("from django.core.management import call_command; call_command('migrate', verbosity=0); "
              "from django.contrib.auth.models import User; User.objects.create_user('solo', password='solo-pass-1234')")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", create], cwd=WEB, capture_output=True,
                            text=True, timeout=300, env={**env, "DJANGO_SETTINGS_MODULE": "ecgdx_web.settings.local",
                                                         "DEBUG": "0"})
    assert result.returncode == 0, result.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "ecgdx", "serve", "--port", str(port), "--data-dir", str(data_dir), "--workers", "1"]
    with running(cmd, url=f"{base}/api/v1/health", env=env, timeout=120) as proc:
        status, _, body = fetch(f"{base}/api/v1/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                data=json.dumps({"username": "solo", "password": "solo-pass-1234"}).encode())
        assert status == 200, body
        token = json.loads(body)["token"]
        started = time.monotonic()
        body, content_type = multipart("image", "Normal_100.png", NORMAL.read_bytes())
        status, headers, answer = fetch(f"{base}/api/v1/predictions", data=body, timeout=90, headers={
            "Content-Type": content_type, "Authorization": f"Token {token}", "Prefer": "wait=60"})
        answer = json.loads(answer)
        deadline = time.monotonic() + 120
        while answer.get("status") not in {"done", "failed"} and time.monotonic() < deadline:
            time.sleep(1)
            status, _, detail = fetch(f"{base}/api/v1/predictions/{answer['id']}",
                                      headers={"Authorization": f"Token {token}"})
            answer = json.loads(detail)
        timings(request)["ecgdx serve --workers 1: upload -> done (s)"] = round(time.monotonic() - started, 1)
        assert answer["status"] == "done" and answer["label"] in LABELS and answer["attempts"] == 1, answer
        status, _, pdf = fetch(answer["report_url"], headers={"Authorization": f"Token {token}"})
        assert status == 200 and pdf.startswith(b"%PDF")
    output = proc.stdout.read()
    assert "1 analysis worker started" in output, output[-3000:]
    assert (data_dir / "db.sqlite3").is_file() and (data_dir / "broker" / "queue").is_dir()


@pytest.fixture(scope="module", autouse=True)
def _print_timings(request):
    yield
    measured = request.config.stash.get(_TIMINGS, {})
    if measured:
        print("\nworker fault tests, measured:")
        for name, value in measured.items():
            print(f"  {name}: {value}")
        artifacts = WEB / "artifacts"  # ignored by git
        artifacts.mkdir(exist_ok=True)
        (artifacts / "worker-faults.json").write_text(json.dumps(measured, indent=1))
