"""Load test of the web app with its analyses on Celery workers: gunicorn (production settings) in front,
real Redis as the broker and real PostgreSQL as the database, all started by this script on loopback.

    python benchmarks/web_load.py                        # 16 clients, 120 s, 1 then 2 workers
    python benchmarks/web_load.py --clients 4 --duration 20 --workers 1,2 --json /tmp/x.json   # quick
    python benchmarks/web_load.py --wait 0 --poll-interval 1     # clients poll GET instead of Prefer: wait

For each worker count in --workers (a fresh Redis, a fresh PostgreSQL cluster and a fresh data folder
each) it migrates the database, creates one user and API token per client, starts gunicorn
(``--worker-class gthread``, --gunicorn-workers x --threads) and N ``ecgdx worker --concurrency 1``
processes (``--nice 10``, the default), warms up (every worker finishes one analysis), then runs
--clients closed loops for --duration seconds. Each client is a clinic user: upload one picture
(``POST /api/v1/predictions``, cycling over examples/*/*.png and the full-resolution JPEGs in
../shared/data/mendeley-v1-fullres-samples/ when present), then ``GET`` its Location with
``Prefer: wait=--wait`` until it is done or failed, then the next picture. When the window ends no
client uploads again, but each follows its last upload to the end (at most --drain seconds).

Measured: upload acceptance (POST -> 202) latency p50/p95/p99/max; errors (any POST that is not 202,
any failed analysis, any exception or timeout); accepted uploads; finished analyses, and the
throughput (analyses finished per minute inside the window, from the rows' finished_at); the
turnaround a user sees (POST -> done); CPU seconds used by each tier (gunicorn, PostgreSQL, Redis,
workers, this client process; from /proc) and by the whole machine. At the end it counts the rows in
PostgreSQL: ``SELECT status, count(*) FROM diagnosis_analysis GROUP BY status`` must hold every
accepted upload as done exactly once (no row lost, none extra), and ``diagnosis_digitization`` must
have one row per done analysis.

Prints a markdown table and writes the numbers as JSON (--json, default docs/web_load.json). Traffic
goes only to 127.0.0.1; everything it starts is stopped and its temporary folders removed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
FULLRES = ROOT.parent / "shared" / "data" / "mendeley-v1-fullres-samples"
sys.path.insert(0, str(WEB))

from diagnosis.tests.realservices import (  # noqa: E402  (plain module: no Django setup)
    free_port,
    postgres_available,
    postgres_server,
    redis_available,
    redis_server,
)

TARGETS = {"upload_p99_ms": 300.0, "errors": 0, "ratio_2_over_1": 1.7}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clinic users (closed loops; 1..64)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load per worker count (5..900)")
    parser.add_argument("--workers", default="1,2", help="worker process counts to compare, e.g. 1,2 (each 1..8)")
    parser.add_argument("--gunicorn-workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=16,
                        help="gthread threads per gunicorn worker (default 16: one per waiting client, see docs)")
    parser.add_argument("--wait", type=float, default=10.0,
                        help="the clients' Prefer: wait=N on GET (default 10 s; 0 = plain GET every --poll-interval)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between plain GETs with --wait 0")
    parser.add_argument("--ramp", type=float, default=10.0,
                        help="start the clients evenly over this many seconds (default 10; 0 = all at once)")
    parser.add_argument("--drain", type=float, default=300.0,
                        help="after the window, wait at most this long for the accepted uploads to finish")
    parser.add_argument("--model", help="ONNX model for the workers (default: ECGDX_MODEL_PATH, else the bundled one)")
    parser.add_argument("--no-jpeg", action="store_true", help="upload only the example PNGs")
    parser.add_argument("--json", default=str(ROOT / "docs" / "web_load.json"), help="write the results here")
    parser.add_argument("--keep-logs", help="copy the server and worker logs into this folder")
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        parser.error("--workers: a comma-separated list of numbers")
    if not counts or any(not 1 <= c <= 8 for c in counts):
        parser.error("--workers: each count must be 1..8")
    if not 1 <= args.clients <= 64 or not 5 <= args.duration <= 900:
        parser.error("--clients must be 1..64 and --duration 5..900")
    for why in (redis_available(), postgres_available()):
        if why:
            sys.exit(f"web_load: {why}")
    pictures = _pictures(not args.no_jpeg)

    machine = {"cpu_count": os.cpu_count(), "loadavg_before": _loadavg(), "started_utc": _utc_now()}
    print(f"web_load: {len(pictures)} pictures ({sum(p['jpeg'] for p in pictures)} full-resolution JPEG), "
          f"{args.clients} clients x {args.duration:.0f} s, workers {counts}; loadavg {machine['loadavg_before']}",
          flush=True)
    runs = []
    for count in counts:
        print(f"web_load: --- {count} worker process{'es' if count > 1 else ''} ---", flush=True)
        runs.append(run_one(count, pictures, args))
        _print_run(runs[-1])
    machine["loadavg_after"] = _loadavg()
    machine["finished_utc"] = _utc_now()

    results = {
        "benchmark": "web_load (Celery workers on Redis and PostgreSQL)",
        "command": "python benchmarks/web_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "config": {"clients": args.clients, "duration_s": args.duration, "ramp_s": args.ramp, "gunicorn_workers": args.gunicorn_workers,
                   "gunicorn_threads": args.threads, "prefer_wait_s": args.wait, "poll_interval_s": args.poll_interval,
                   "drain_s": args.drain, "pictures": [p["name"] for p in pictures],
                   "picture_bytes": {"min": min(len(p["data"]) for p in pictures),
                                     "max": max(len(p["data"]) for p in pictures)}},
        "targets": TARGETS,
        "runs": runs,
    }
    by_count = {r["workers"]: r for r in runs}
    if 1 in by_count and 2 in by_count and by_count[1]["throughput_per_min"]:
        results["ratio_2_over_1"] = round(by_count[2]["throughput_per_min"] / by_count[1]["throughput_per_min"], 2)
    results["model"] = _capacity_model(runs)
    _print_summary(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"web_load: wrote {args.json}")
    ok = all(r["checks"]["all_ok"] for r in runs)
    return 0 if ok else 1


# ------------------------------------------------------------------------------------- one setup


def run_one(count: int, pictures: list[dict], args) -> dict:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ecgdx-load-")))
        redis = stack.enter_context(redis_server(tmp))
        pg = stack.enter_context(postgres_server())
        env = _env(tmp, redis.url, pg.url, args)
        t0 = time.monotonic()
        _manage(env, "migrate", "--noinput", "-v", "0")
        tokens = _users_and_tokens(env, args.clients)
        port = free_port()
        logs = tmp / "logs"
        logs.mkdir()
        gunicorn = stack.enter_context(_Process(
            [str(_bin("gunicorn")), "--chdir", str(WEB), "--worker-class", "gthread",
             "--workers", str(args.gunicorn_workers), "--threads", str(args.threads), "--bind", f"127.0.0.1:{port}",
             "--timeout", "120", "--graceful-timeout", "20", "--keep-alive", "5", "--no-control-socket",
             "ecgdx_web.wsgi"],
            env, logs / "gunicorn.log"))
        workers = [stack.enter_context(_Process(
            [str(_bin("ecgdx")), "worker", "--concurrency", "1", *(["--model", args.model] if args.model else [])],
            env, logs / f"worker-{i}.log")) for i in range(count)]
        if args.keep_logs:
            stack.callback(_copy_logs, logs, Path(args.keep_logs) / f"workers-{count}")
        _wait_http(port, gunicorn)
        client = _Client(port, args)
        warmup_ids = _warm_up(client, tokens, pictures, workers)
        setup_s = round(time.monotonic() - t0, 1)
        print(f"web_load: ready after {setup_s} s ({len(warmup_ids)} warm-up uploads)", flush=True)

        tiers = {"gunicorn": [gunicorn.pid], "postgres": [_postmaster_pid(pg)], "redis": [redis.proc.pid],
                 "workers": [w.pid for w in workers]}
        log_offset = (logs / "gunicorn.log").stat().st_size
        result = _load(client, tokens, pictures, args, tiers)
        result.update(workers=count, setup_s=setup_s, warmup_uploads=len(warmup_ids))
        result["db"] = _db_counts(pg.url, result.pop("_window"), result.pop("_accepted_ids"), warmup_ids)
        result["server_upload_ms"] = _summary(_queued_ms(logs / "gunicorn.log", log_offset))
        result["checks"] = _checks(result)
        return result


def _env(tmp: Path, broker: str, database: str, args) -> dict:
    drop = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "ECGDX_BROKER_URL",
            "ECGDX_WEB_DATA_DIR", "LOG_LEVEL", "SECURE_PROXY_SSL_HEADER")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(DJANGO_SETTINGS_MODULE="ecgdx_web.settings.production", SECRET_KEY=secrets.token_urlsafe(50),
               ALLOWED_HOSTS="127.0.0.1", SECURE_SSL_REDIRECT="0", SECURE_HSTS_SECONDS="0",
               DATABASE_URL=database, ECGDX_BROKER_URL=broker, ECGDX_UPLOAD_RATE_LIMIT="0",
               ECGDX_WEB_DATA_DIR=str(tmp / "data"), PYTHONUNBUFFERED="1")
    if args.model:
        env["ECGDX_MODEL_PATH"] = str(Path(args.model).resolve())
    (tmp / "data" / "static").mkdir(parents=True, exist_ok=True)
    return env


def _bin(name: str) -> Path:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        sys.exit(f"web_load: {path} is missing (pip install -e '.[web]' gunicorn)")
    return path


def _manage(env: dict, *command: str, code: str | None = None) -> str:
    cmd = [sys.executable, "manage.py", *command] if code is None else [sys.executable, "manage.py", "shell", "-c", code]
    out = subprocess.run(cmd, cwd=WEB, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        sys.exit(f"web_load: manage.py {command or 'shell'} failed: {out.stderr[-3000:]}")
    return out.stdout


def _users_and_tokens(env: dict, n: int) -> list[str]:
    code = ("import json; from django.contrib.auth.models import User; "
            "from diagnosis.api_tokens import api_token_create; "
            f"print(json.dumps([api_token_create(user=User.objects.create_user(f'clinic{{i}}', "
            f"password='load-test-password-{{i}}-x9'), replace_existing=False).token for i in range({n})]))")
    return json.loads(_manage(env, code=code).strip().splitlines()[-1])


class _Process:
    """A child process with its output in a log file; stopped (TERM, then KILL, with its descendants) on exit."""

    def __init__(self, cmd: list[str], env: dict, log: Path) -> None:
        self.cmd, self.env, self.log = cmd, env, log

    def __enter__(self):
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        return self

    def __exit__(self, *exc) -> None:
        descendants = _descendants(self.pid)
        if self.proc.poll() is None:
            self.proc.terminate()  # gunicorn: graceful stop; Celery: warm shutdown (the running task finishes)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in descendants:  # a pool child left behind by a killed parent
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        self._log.close()


def _copy_logs(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)


def _wait_http(port: int, server: _Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            sys.exit(f"web_load: gunicorn exited: {server.log.read_text()[-3000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _, _ = _http(port, "GET", "/api/v1/health", timeout=5)
            if status == 200:
                return
        time.sleep(0.3)
    sys.exit(f"web_load: gunicorn did not answer within {timeout:.0f} s: {server.log.read_text()[-3000:]}")


def _postmaster_pid(pg) -> int:
    return int((pg.folder / "data" / "postmaster.pid").read_text().split()[0])


# ------------------------------------------------------------------------------------------ HTTP


def _http(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
          timeout: float = 120) -> tuple[int, dict, bytes]:
    """One request on a new connection (no reuse, so no request is ever sent twice on a stale one)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def _multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = "ecgdxload" + secrets.token_hex(8)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _pictures(with_jpeg: bool) -> list[dict]:
    files = sorted((ROOT / "examples").glob("*/*.png"))
    if with_jpeg and FULLRES.is_dir():
        files += sorted(FULLRES.glob("**/*.jpg"))
    out = []
    for f in files:
        data = f.read_bytes()
        body, content_type = _multipart(data, "page" + f.suffix.lower())
        out.append({"name": str(f.relative_to(ROOT.parent if FULLRES in f.parents else ROOT)), "data": data,
                    "body": body, "content_type": content_type, "jpeg": f.suffix.lower() == ".jpg"})
    if not out:
        sys.exit("web_load: no pictures in examples/")
    return out


class _Client:
    def __init__(self, port: int, args) -> None:
        self.port, self.args = port, args
        self.gets = 0  # GET requests sent (the GIL makes += safe enough for a count)

    def upload(self, token: str, picture: dict) -> tuple[float, int, dict, bytes]:
        headers = {"Authorization": f"Token {token}", "Content-Type": picture["content_type"]}
        t0 = time.perf_counter()
        status, head, data = _http(self.port, "POST", "/api/v1/predictions", picture["body"], headers, timeout=60)
        return 1000.0 * (time.perf_counter() - t0), status, head, data

    def follow(self, token: str, location: str, deadline: float) -> tuple[str, list[str]]:
        """GET the prediction until done/failed or the deadline: (final status or 'timeout', errors)."""
        path = urllib.parse.urlsplit(location).path
        errors = []
        while time.monotonic() < deadline:
            self.gets += 1
            headers = {"Authorization": f"Token {token}"}
            if self.args.wait > 0:
                headers["Prefer"] = f"wait={max(1, min(self.args.wait, int(deadline - time.monotonic())))}"
            try:
                status, _, data = _http(self.port, "GET", path, headers=headers, timeout=self.args.wait + 60)
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"GET exception {type(exc).__name__}: {exc}")
                time.sleep(1.0)
                continue
            if status != 200:
                errors.append(f"GET {status}: {data[:200]!r}")
                time.sleep(1.0)
                continue
            state = json.loads(data)["status"]
            if state in ("done", "failed"):
                return state, errors
            if self.args.wait <= 0:
                time.sleep(self.args.poll_interval)
        return "timeout", errors


def _warm_up(client: _Client, tokens: list[str], pictures: list[dict], workers: list[_Process]) -> list[str]:
    """Uploads, a few at a time, until every worker has finished an analysis and every gunicorn worker
    has served uploads (their first requests import the image code); returns the ids."""
    ids, problems, deadline = [], [], time.monotonic() + 300
    lock = threading.Lock()

    def one(i: int) -> None:
        picture = pictures[i % len(pictures)]
        try:
            _, status, head, data = client.upload(tokens[i % len(tokens)], picture)
        except (OSError, http.client.HTTPException) as exc:
            problems.append(f"warm-up upload: {type(exc).__name__}: {exc}")
            return
        if status != 202:
            problems.append(f"warm-up upload answered {status}: {data[:500]!r}")
            return
        with lock:
            ids.append(json.loads(data)["id"])
        state, _ = client.follow(tokens[i % len(tokens)], head["location"], deadline)
        if state != "done":
            problems.append(f"warm-up analysis of {picture['name']} ended {state}")

    i = 0
    while True:
        batch = [threading.Thread(target=one, args=(i + k,)) for k in range(max(4, len(workers)))]
        i += len(batch)
        for t in batch:
            t.start()
        for t in batch:
            t.join()
        if problems:
            sys.exit("web_load: " + "; ".join(problems) + " | " +
                     " | ".join(w.log.read_text(errors="replace")[-1500:] for w in workers))
        if all(_analyses_logged(w.log) for w in workers) and i >= 8:
            return ids
        if time.monotonic() > deadline:
            sys.exit("web_load: not every worker analysed a warm-up upload within 300 s: " +
                     " | ".join(w.log.read_text()[-800:] for w in workers))


def _analyses_logged(log: Path) -> int:
    return len(re.findall(r"attempt \d+\)", log.read_text(errors="replace")))


def _queued_ms(log: Path, offset: int) -> list[float]:
    """The app's own time for each upload after ``offset`` of the log (its INFO line 'queued (N ms)':
    read, decode, store, row; without authentication, sending the task and writing the answer)."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [float(m) for m in re.findall(r": queued \((\d+) ms\)", text)]


# ------------------------------------------------------------------------------------------ load


def _load(client: _Client, tokens: list[str], pictures: list[dict], args, tiers: dict) -> dict:
    cycle, lock = itertools.cycle(range(len(pictures))), threading.Lock()
    latencies, turnaround, errors, accepted, outcomes = [], [], [], [], {"done": 0, "failed": 0, "timeout": 0}
    finished_in_window = [0]

    gets_start = client.gets
    cpu_start = {name: sum(_tree_cpu(p) for p in pids) for name, pids in tiers.items()}
    machine_start, self_start = _machine_cpu(), _self_cpu()
    t_start_wall, t_start = time.time(), time.monotonic()
    end = t_start + args.duration
    drain_deadline = end + args.drain

    def loop(n: int) -> None:
        token = tokens[n]
        time.sleep(n * args.ramp / args.clients)
        while time.monotonic() < end:
            with lock:
                picture = pictures[next(cycle)]
            posted = time.monotonic()
            try:
                ms, status, head, data = client.upload(token, picture)
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append({"phase": "POST", "picture": picture["name"], "error": f"{type(exc).__name__}: {exc}"})
                time.sleep(1.0)
                continue
            if status != 202:
                with lock:
                    errors.append({"phase": "POST", "picture": picture["name"], "status": status,
                                   "body": data[:300].decode(errors="replace")})
                time.sleep(1.0)
                continue
            with lock:
                latencies.append(ms)
                accepted.append(json.loads(data)["id"])
            state, follow_errors = client.follow(token, head["location"], drain_deadline)
            finished = time.monotonic()
            with lock:
                outcomes[state] += 1
                errors.extend({"phase": "GET", "picture": picture["name"], "error": e} for e in follow_errors)
                if state != "done":
                    errors.append({"phase": "analysis", "picture": picture["name"], "error": state})
                else:
                    turnaround.append(finished - posted)
                    if finished <= end:
                        finished_in_window[0] += 1

    threads = [threading.Thread(target=loop, args=(n,), name=f"client-{n}") for n in range(args.clients)]
    for t in threads:
        t.start()
    sample = _sampler(tiers, end)
    time.sleep(max(0.0, end - time.monotonic()))
    cpu_end = {name: sum(_tree_cpu(p) for p in pids) for name, pids in tiers.items()}
    machine_end, self_end, t_end_wall = _machine_cpu(), _self_cpu(), time.time()
    loadavg_end = _loadavg()
    for t in threads:
        t.join()
    drain_s = round(time.monotonic() - end, 1)
    sample.join()
    cpu_drained = {name: sum(_tree_cpu(p) for p in pids) for name, pids in tiers.items()}
    cpu_drained["clients"] = _self_cpu()
    cpu_total = {name: round(cpu_drained[name] - (cpu_start[name] if name in cpu_start else self_start), 1)
                 for name in cpu_drained}

    window = args.duration
    cpu = {name: round(cpu_end[name] - cpu_start[name], 1) for name in tiers}
    cpu["clients"] = round(self_end - self_start, 1)
    busy = machine_end[0] - machine_start[0]
    total = machine_end[1] - machine_start[1]
    cpu["machine_busy"] = round(busy, 1)
    cpu["machine_capacity"] = round(total, 1)
    cpu["others"] = round(busy - sum(cpu[k] for k in (*tiers, "clients")), 1)
    return {
        "window_s": window,
        "accepted": len(latencies),
        "gets_window_and_drain": client.gets - gets_start,
        "upload_ms": _summary(latencies),
        "errors": len(errors),
        "error_samples": errors[:20],
        "outcomes": outcomes,
        "finished_in_window_client": finished_in_window[0],
        "turnaround_s": _summary(turnaround, digits=2),
        "drain_s": drain_s,
        "cpu_s": cpu,
        "cpu_s_window_and_drain": cpu_total,
        "loadavg_end_of_window": loadavg_end,
        "rss_mb": sample.peak,
        "_window": (t_start_wall, t_end_wall),
        "_accepted_ids": accepted,
    }


class _sampler(threading.Thread):
    """Peak resident memory per tier, sampled every 2 s during the window."""

    def __init__(self, tiers: dict, end: float) -> None:
        super().__init__(daemon=True)
        self.tiers, self.end, self.peak = tiers, end, {}
        self.start()

    def run(self) -> None:
        while time.monotonic() < self.end:
            for name, pids in self.tiers.items():
                rss = sum(_tree_rss(p) for p in pids)
                self.peak[name] = round(max(self.peak.get(name, 0.0), rss), 1)
            time.sleep(2.0)


# ----------------------------------------------------------------------------------- /proc, CPU

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        for child in _children(stack.pop()):
            out.append(child)
            stack.append(child)
    return out


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
    return total


def _tree_rss(pid: int) -> float:
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return total


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / _TICK, total / _TICK


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ------------------------------------------------------------------------------------ database


def _db_counts(url: str, window: tuple[float, float], accepted: list[str], warmup: list[str]) -> dict:
    import psycopg

    start, end = (datetime.fromtimestamp(t, UTC) for t in window)
    with psycopg.connect(url) as conn:
        status = dict(conn.execute("SELECT status, count(*) FROM diagnosis_analysis GROUP BY status").fetchall())
        digitizations = conn.execute("SELECT count(*) FROM diagnosis_digitization").fetchone()[0]
        rows = conn.execute("SELECT id::text, status, attempts FROM diagnosis_analysis").fetchall()
        in_window = conn.execute(
            "SELECT count(*) FROM diagnosis_analysis WHERE status = 'done' AND finished_at >= %s AND finished_at <= %s",
            (start, end)).fetchone()[0]
        stats = conn.execute(
            "SELECT processing_ms, EXTRACT(EPOCH FROM started_at - created_at) FROM diagnosis_analysis "
            "WHERE status = 'done' AND finished_at >= %s AND finished_at <= %s", (start, end)).fetchall()
        orphans = conn.execute(
            "SELECT count(*) FROM diagnosis_digitization d LEFT JOIN diagnosis_analysis a ON a.id = d.analysis_id "
            "WHERE a.id IS NULL OR a.status <> 'done'").fetchone()[0]
    ids = {r[0] for r in rows}
    expected = set(accepted) | set(warmup)
    done_ids = {r[0] for r in rows if r[1] == "done"}
    return {
        "status_counts": status,
        "rows": len(rows),
        "digitizations": digitizations,
        "digitizations_not_of_a_done_row": orphans,
        "accepted_plus_warmup": len(expected),
        "accepted_ids_duplicated": len(accepted) - len(set(accepted)),
        "missing_rows": len(expected - ids),
        "extra_rows": len(ids - expected),
        "accepted_not_done": len(expected - done_ids),
        "max_attempts": max((r[2] for r in rows), default=0),
        "rows_with_more_than_one_attempt": sum(1 for r in rows if r[2] > 1),
        "done_in_window": in_window,
        "processing_ms": _summary([float(r[0]) for r in stats]),
        "queue_wait_s": _summary([float(r[1]) for r in stats if r[1] is not None], digits=2),
    }


def _checks(r: dict) -> dict:
    db = r["db"]
    checks = {
        "upload_p99_ok": (r["upload_ms"].get("p99") or 1e9) <= TARGETS["upload_p99_ms"],
        "no_errors": r["errors"] == 0,
        "every_accepted_finished": db["accepted_not_done"] == 0 and r["outcomes"]["timeout"] == 0,
        "none_lost_none_extra": db["missing_rows"] == 0 and db["extra_rows"] == 0 and db["accepted_ids_duplicated"] == 0,
        "one_digitization_per_done": db["digitizations"] == db["status_counts"].get("done", 0)
                                     and db["digitizations_not_of_a_done_row"] == 0,
    }
    r["throughput_per_min"] = round(db["done_in_window"] * 60.0 / r["window_s"], 2)
    checks["all_ok"] = all(checks.values())
    return checks


# ------------------------------------------------------------------------------- model, output


def _capacity_model(runs: list[dict]) -> dict:
    """CPU cost of one upload in each tier (from the window's start until every accepted upload
    finished, divided by the accepted uploads: the web and database costs include the upload's
    polling), and what one core of each tier could carry per minute if nothing else ran on it."""
    out = {}
    for r in runs:
        accepted = r["accepted"] or 1
        cpu = r["cpu_s_window_and_drain"]  # from the window's start until every accepted upload finished
        per = {
            "worker_cpu_s_per_analysis": round(cpu["workers"] / accepted, 3),
            "web_cpu_ms_per_upload": round(1000 * cpu["gunicorn"] / accepted, 1),
            "postgres_cpu_ms_per_upload": round(1000 * cpu["postgres"] / accepted, 1),
            "redis_cpu_ms_per_upload": round(1000 * cpu["redis"] / accepted, 2),
            "client_cpu_ms_per_upload": round(1000 * cpu["clients"] / accepted, 1),
            "worker_share_of_a_core_in_window": round(r["cpu_s"]["workers"] / r["workers"] / r["window_s"], 2),
        }
        per["one_core_worker_analyses_per_min"] = round(60 / per["worker_cpu_s_per_analysis"], 1) \
            if per["worker_cpu_s_per_analysis"] else None
        per["one_core_web_uploads_per_min"] = round(60_000 / per["web_cpu_ms_per_upload"]) \
            if per["web_cpu_ms_per_upload"] else None
        per["one_core_postgres_uploads_per_min"] = round(60_000 / per["postgres_cpu_ms_per_upload"]) \
            if per["postgres_cpu_ms_per_upload"] else None
        out[f"workers_{r['workers']}"] = per
    return out


def _summary(values: list[float], digits: int = 1) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)

    return {"n": len(values), "p50": round(statistics.median(ordered), digits), "p95": pick(0.95), "p99": pick(0.99),
            "max": round(ordered[-1], digits), "mean": round(statistics.fmean(ordered), digits)}


def _print_run(r: dict) -> None:
    u, db = r["upload_ms"], r["db"]
    print(f"  accepted {r['accepted']}, upload p50/p95/p99/max {u.get('p50')}/{u.get('p95')}/{u.get('p99')}/"
          f"{u.get('max')} ms, errors {r['errors']}, outcomes {r['outcomes']}, done in window {db['done_in_window']} "
          f"= {r['throughput_per_min']}/min, drain {r['drain_s']} s")
    print(f"  rows {db['status_counts']}, digitizations {db['digitizations']}, missing {db['missing_rows']}, "
          f"extra {db['extra_rows']}, max attempts {db['max_attempts']}; CPU s {r['cpu_s']}")
    print(f"  checks {r['checks']}", flush=True)
    for e in r["error_samples"][:5]:
        print(f"  error: {e}")


def _print_summary(results: dict) -> None:
    m, c = results["machine"], results["config"]
    print()
    print(f"{m['cpu_count']} CPUs, loadavg before {m['loadavg_before']}, after {m['loadavg_after']}; "
          f"{c['clients']} clients, {c['duration_s']:.0f} s each, gunicorn gthread {c['gunicorn_workers']}x"
          f"{c['gunicorn_threads']}, Prefer: wait={c['prefer_wait_s']:g}")
    print()
    print("| workers | accepted | upload p50 ms | p95 | p99 | max | errors | done in window | analyses/min "
          "| turnaround p50 s | all finished | rows ok | CPU s: workers / web / pg / redis / clients / others "
          "(of capacity) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        u, db, cpu, ch = r["upload_ms"], r["db"], r["cpu_s"], r["checks"]
        print(f"| {r['workers']} | {r['accepted']} | {u.get('p50')} | {u.get('p95')} | {u.get('p99')} | {u.get('max')} "
              f"| {r['errors']} | {db['done_in_window']} | {r['throughput_per_min']} | {r['turnaround_s'].get('p50')} "
              f"| {'yes' if ch['every_accepted_finished'] else 'NO'} "
              f"| {'yes' if ch['none_lost_none_extra'] and ch['one_digitization_per_done'] else 'NO'} "
              f"| {cpu['workers']} / {cpu['gunicorn']} / {cpu['postgres']} / {cpu['redis']} / {cpu['clients']} / "
              f"{cpu['others']} ({cpu['machine_capacity']}) |")
    if "ratio_2_over_1" in results:
        ratio = results["ratio_2_over_1"]
        print(f"\nthroughput ratio 2 workers / 1 worker: {ratio} (target >= {TARGETS['ratio_2_over_1']}: "
              f"{'met' if ratio >= TARGETS['ratio_2_over_1'] else 'MISSED'})")


if __name__ == "__main__":
    sys.exit(main())
