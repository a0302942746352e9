"""Load test of the web app's REST API on this machine: latency and throughput of uploads.

    python benchmarks/web_load.py [--model MODEL.onnx | --tiny-model] [--requests 20] [--concurrency 2]
    python benchmarks/web_load.py --server gunicorn --workers 2 --requests 500 --concurrency 8
    python benchmarks/web_load.py --server gunicorn --workers 2 --concurrency 16 --duration 120
    python benchmarks/web_load.py --url http://127.0.0.1:8000 --token TOKEN   # a server already running

Without --url it starts its own server on a free loopback port with a temporary data directory
(``ecgdx serve`` with waitress, or gunicorn with the production settings, N workers and SQLite),
creates a user and an API token, runs the load and stops the server. Each upload is
``POST /api/v1/predictions`` with the example ECG (multipart), so it measures the whole upload
path: upload parsing, decode, preprocessing, quality gate, inference, private storage and the
database row (the occlusion explanation is made later, on the first view: not measured here).
``GET /api/v1/health`` is measured too. With --duration it keeps sending for that many seconds
instead of a fixed count. With gunicorn it samples each worker's resident memory once a second and
reports it at the start and end of the load, and checks that every 201 left exactly one row.

Traffic goes only to loopback addresses (anything else is refused); the run is bounded by
--requests and --max-seconds and stops by itself. Prints a table; --json writes the numbers.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "normal" / "Normal_100.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running server (loopback only); default: start one")
    parser.add_argument("--token", help="API token for --url (anonymous demo uploads without it)")
    parser.add_argument("--model", help="ONNX model for the server it starts (default: ECGDX_MODEL_PATH/bundled)")
    parser.add_argument("--tiny-model", action="store_true",
                        help="use a tiny random ONNX model (needs the onnx package): measures the app, not a CNN")
    parser.add_argument("--image", default=str(EXAMPLE), help="picture to upload (default: the example ECG)")
    parser.add_argument("--requests", type=int, default=20, help="uploads to send (default 20, max 500)")
    parser.add_argument("--concurrency", type=int, default=2, help="uploads in flight at once (default 2, max 16)")
    parser.add_argument("--threads", type=int, default=4, help="server request threads when it starts one")
    parser.add_argument("--server", choices=["serve", "gunicorn"], default="serve",
                        help="server to start: `ecgdx serve` (waitress) or gunicorn with production settings")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--duration", type=float, help="send for this many seconds (at most 600) instead of --requests")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 500 or not 1 <= args.concurrency <= 16:
        parser.error("--requests must be 1..500 and --concurrency 1..16")
    if args.duration is not None and not 1 <= args.duration <= 600:
        parser.error("--duration must be 1..600 seconds")
    if not 1 <= args.workers <= 8:
        parser.error("--workers must be 1..8")
    image = Path(args.image).read_bytes()

    if args.url:
        _require_loopback(args.url)
        results = run_load(args.url.rstrip("/"), args.token, image, args)
    else:
        with tempfile.TemporaryDirectory(prefix="ecgdx-web-load-") as tmp:
            model = _model_path(args, Path(tmp))
            with _server(Path(tmp), model, args) as server:
                results = run_load(server.base, server.token, image, args, server=server)
    _print(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["uploads"]["errors"] == 0 else 1


# ------------------------------------------------------------------------------------------- load


def run_load(base: str, token: str | None, image: bytes, args, server=None) -> dict:
    headers = {"Authorization": f"Token {token}"} if token else {}
    if server is not None:
        headers.update(server.headers)
    health = [_timed(lambda: _request(f"{base}/api/v1/health", headers=server.headers if server else None))[0]
              for _ in range(20)]
    body, content_type = _multipart(image)
    post_headers = {**headers, "Content-Type": content_type}
    # Warm-up: every worker loads its model on its first request.
    warmup = max(2, 2 * args.workers) if server is not None and args.server == "gunicorn" else 2
    for _ in range(warmup):
        _request(f"{base}/api/v1/predictions", body, post_headers)
    memory = _MemorySampler(server.worker_pids if server else None)
    limit = args.duration if args.duration else args.max_seconds
    deadline = time.monotonic() + limit

    def one(_):
        if time.monotonic() > deadline:
            return None
        return _timed(lambda: _request(f"{base}/api/v1/predictions", body, post_headers))

    def worker_loop(_):
        out = []
        while time.monotonic() < deadline:
            out.append(one(None))
        return [r for r in out if r is not None]

    started = time.perf_counter()
    with memory, ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        if args.duration:
            done = [r for chunk in pool.map(worker_loop, range(args.concurrency)) for r in chunk]
        else:
            done = [r for r in pool.map(one, range(args.requests)) if r is not None]
    wall = time.perf_counter() - started
    latencies = [ms for ms, status in done if status in (200, 201)]
    statuses: dict[str, int] = {}
    for _, status in done:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "base_url": base,
        "image_bytes": len(image),
        "concurrency": args.concurrency,
        "health_ms": _summary(health),
        "uploads": {
            "sent": len(done),
            "ok": len(latencies),
            "errors": len(done) - len(latencies),
            "statuses": statuses,
            "latency_ms": _summary(latencies),
            "throughput_per_s": round(len(latencies) / wall, 2) if wall > 0 else None,
            "wall_s": round(wall, 2),
        },
        "server": getattr(args, "server", "url") if not args.url else "url",
        "workers": getattr(args, "workers", None) if not args.url else None,
        "worker_rss_mb": memory.summary(),
        "rows_stored": server.rows() if server is not None else None,
        "created_201": sum(1 for _, status in done if status == 201),
        "warmup_uploads": warmup,
        "cpu_count": os.cpu_count(),
    }


class _MemorySampler:
    """Resident memory (MB) of the server's worker processes, sampled once a second in a thread."""

    def __init__(self, pids_fn) -> None:
        self.pids_fn = pids_fn
        self.samples: dict[int, list[float]] = {}
        self._stop = None

    def __enter__(self):
        import threading

        if self.pids_fn is None:
            return self
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            for pid in self.pids_fn():
                rss = _rss_mb(pid)
                if rss is not None:
                    self.samples.setdefault(pid, []).append(rss)
            if self._stop.wait(1.0):
                return

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=5)

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        return {str(pid): {"first": v[0], "last": v[-1], "max": max(v), "growth": round(v[-1] - v[0], 1)}
                for pid, v in self.samples.items()}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _timed(fn) -> tuple[float, int]:
    t0 = time.perf_counter()
    status = fn()
    return round(1000 * (time.perf_counter() - t0), 1), status


def _request(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code
    except OSError:
        return 0


def _multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "ecgdxload0123456789"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"page.png\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
        "mean": round(statistics.fmean(ordered), 1),
    }


def _print(r: dict) -> None:
    u, h = r["uploads"], r["health_ms"]
    lat = u["latency_ms"]
    print(f"server {r['base_url']}, {r['cpu_count']} CPUs, upload {r['image_bytes'] / 1000:.0f} kB, "
          f"concurrency {r['concurrency']}")
    print(f"server: {r['server']}" + (f", {r['workers']} workers" if r.get("workers") else ""))
    print("| request | n | p50 ms | p95 ms | p99 ms | max ms | throughput |")
    print("|---|---|---|---|---|---|---|")
    print(f"| GET /api/v1/health | {h.get('n')} | {h.get('p50')} | {h.get('p95')} | {h.get('p99')} | {h.get('max')} | |")
    print(f"| POST /api/v1/predictions | {lat.get('n')} | {lat.get('p50')} | {lat.get('p95')} | {lat.get('p99')} "
          f"| {lat.get('max')} | {u['throughput_per_s']}/s |")
    print(f"statuses: {u['statuses']}  errors: {u['errors']}")
    if r.get("worker_rss_mb"):
        for pid, m in r["worker_rss_mb"].items():
            print(f"worker {pid}: RSS {m['first']} MB at start, {m['last']} MB at end (max {m['max']}, "
                  f"growth {m['growth']} MB)")
    if r.get("rows_stored") is not None:
        expected = r["created_201"] + r["warmup_uploads"]
        print(f"analyses stored: {r['rows_stored']} (201 answers: {r['created_201']} + {r['warmup_uploads']} "
              f"warm-up uploads = {expected}; {'none lost' if r['rows_stored'] >= expected else 'ROWS MISSING'})")


# ----------------------------------------------------------------------------------------- server


def _require_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        sys.exit(f"web_load: refusing to send load to {host!r}: only loopback addresses (127.0.0.1, ::1, localhost)")


def _model_path(args, tmp: Path) -> str | None:
    if args.tiny_model:
        sys.path.insert(0, str(ROOT / "web"))
        from diagnosis.tests.helpers import build_tiny_onnx_model

        return str(build_tiny_onnx_model(tmp / "tiny.onnx"))
    return args.model or os.environ.get("ECGDX_MODEL_PATH") or None


class _server:
    """`ecgdx serve`, or gunicorn with the production settings, on a free loopback port with its own
    data dir, a user and an API token."""

    def __init__(self, tmp: Path, model: str | None, args) -> None:
        self.tmp, self.model, self.args = tmp, model, args
        self.proc = None
        self.headers: dict[str, str] = {}
        self.base = self.token = None

    def _env(self) -> dict:
        drop = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(ECGDX_WEB_DATA_DIR=str(self.tmp / "data"), ECGDX_UPLOAD_RATE_LIMIT="0", LOG_LEVEL="WARNING")
        if self.model:
            env["ECGDX_MODEL_PATH"] = self.model
        if self.args.server == "gunicorn":
            import secrets

            env.update(DJANGO_SETTINGS_MODULE="ecgdx_web.settings.production", SECRET_KEY=secrets.token_urlsafe(50),
                       ALLOWED_HOSTS="127.0.0.1", SECURE_PROXY_SSL_HEADER="1")
        return env

    def __enter__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = self._env()
        bin_dir = Path(sys.executable).parent
        if self.args.server == "gunicorn":
            # As a TLS-terminating proxy would send it; production settings redirect plain HTTP.
            self.headers = {"X-Forwarded-Proto": "https"}
            for command in (["migrate", "--noinput", "-v", "0"], ["collectstatic", "--noinput", "-v", "0"]):
                out = subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT / "web", env=env,
                                     capture_output=True, text=True, timeout=300)
                if out.returncode != 0:
                    sys.exit(f"web_load: manage.py {command[0]} failed: {out.stderr[-2000:]}")
            exe = shutil.which("gunicorn", path=str(bin_dir)) or "gunicorn"
            cmd = [exe, "--chdir", str(ROOT / "web"), "--workers", str(self.args.workers), "--bind",
                   f"127.0.0.1:{port}", "--timeout", "120", "ecgdx_web.wsgi"]
        else:
            exe = shutil.which("ecgdx", path=str(bin_dir)) or "ecgdx"
            cmd = [exe, "serve", "--port", str(port), "--threads", str(self.args.threads)]
        self.env = env
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while _request(f"{base}/api/v1/health", headers=self.headers) == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                sys.exit(f"web_load: the server did not start: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.3)
        if _request(f"{base}/api/v1/health", headers=self.headers) != 200:
            self.__exit__()
            sys.exit("web_load: the server has no model: pass --model MODEL.onnx or --tiny-model")
        self.base, self.token = base, self._token(env)
        return self

    def worker_pids(self) -> list[int]:
        """gunicorn: the worker processes (children of the master); serve: the server process."""
        if self.proc is None:
            return []
        if self.args.server != "gunicorn":
            return [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(p) for p in children.read_text().split()]
        except OSError:
            return []

    def _manage_py(self, code: str, env: dict) -> str:
        env = dict(env, PYTHONPATH=str(ROOT / "web"))
        env.setdefault("DJANGO_SETTINGS_MODULE", "ecgdx_web.settings.local")
        out = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], env=env,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise SystemExit(f"web_load: database step failed: {out.stderr[-2000:]}")
        return out.stdout.strip().splitlines()[-1]

    def _token(self, env: dict) -> str:
        return self._manage_py(
            "from django.contrib.auth.models import User; from diagnosis.api_tokens import api_token_create; "
            "u = User.objects.create_user('load', password='load-test-password-1'); "
            "print(api_token_create(user=u, replace_existing=False).token)", env)

    def rows(self) -> int:
        return int(self._manage_py("from diagnosis.models import Analysis; print(Analysis.objects.count())",
                                   self.env))

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


if __name__ == "__main__":
    sys.exit(main())
