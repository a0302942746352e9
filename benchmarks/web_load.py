"""Load test of the web app's REST API on this machine: latency and throughput of uploads.

    python benchmarks/web_load.py [--model MODEL.onnx | --tiny-model] [--requests 20] [--concurrency 2]
    python benchmarks/web_load.py --url http://127.0.0.1:8000 --token TOKEN   # a server already running

Without --url it starts its own server (``ecgdx serve``, waitress, SQLite) on a free loopback port
with a temporary data directory, creates a user and an API token, runs the load and stops the
server. Each upload is ``POST /api/v1/predictions`` with the example ECG (multipart), so it measures
the whole path: upload parsing, decode, preprocessing, quality gate, inference, occlusion explanation,
heatmap rendering, private storage and the database row. ``GET /api/v1/health`` is measured too.

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
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 500 or not 1 <= args.concurrency <= 16:
        parser.error("--requests must be 1..500 and --concurrency 1..16")
    image = Path(args.image).read_bytes()

    if args.url:
        _require_loopback(args.url)
        results = run_load(args.url.rstrip("/"), args.token, image, args)
    else:
        with tempfile.TemporaryDirectory(prefix="ecgdx-web-load-") as tmp:
            model = _model_path(args, Path(tmp))
            with _server(Path(tmp), model, args.threads) as (base, token):
                results = run_load(base, token, image, args)
    _print(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["uploads"]["errors"] == 0 else 1


# ------------------------------------------------------------------------------------------- load


def run_load(base: str, token: str | None, image: bytes, args) -> dict:
    headers = {"Authorization": f"Token {token}"} if token else {}
    health = [_timed(lambda: _request(f"{base}/api/v1/health"))[0] for _ in range(20)]
    body, content_type = _multipart(image)
    deadline = time.monotonic() + args.max_seconds

    def one(_):
        if time.monotonic() > deadline:
            return None
        return _timed(lambda: _request(f"{base}/api/v1/predictions", body,
                                       {**headers, "Content-Type": content_type}))

    _request(f"{base}/api/v1/predictions", body, {**headers, "Content-Type": content_type})  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
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
        "cpu_count": os.cpu_count(),
    }


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
        "max": round(ordered[-1], 1),
        "mean": round(statistics.fmean(ordered), 1),
    }


def _print(r: dict) -> None:
    u, h = r["uploads"], r["health_ms"]
    lat = u["latency_ms"]
    print(f"server {r['base_url']}, {r['cpu_count']} CPUs, upload {r['image_bytes'] / 1000:.0f} kB, "
          f"concurrency {r['concurrency']}")
    print("| request | n | p50 ms | p95 ms | max ms | throughput |")
    print("|---|---|---|---|---|---|")
    print(f"| GET /api/v1/health | {h.get('n')} | {h.get('p50')} | {h.get('p95')} | {h.get('max')} | |")
    print(f"| POST /api/v1/predictions | {lat.get('n')} | {lat.get('p50')} | {lat.get('p95')} | {lat.get('max')} "
          f"| {u['throughput_per_s']}/s |")
    print(f"statuses: {u['statuses']}  errors: {u['errors']}")


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
    """`ecgdx serve` on a free loopback port with its own data dir, a user and an API token."""

    def __init__(self, tmp: Path, model: str | None, threads: int) -> None:
        self.tmp, self.model, self.threads = tmp, model, threads
        self.proc = None

    def __enter__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "DEBUG")}
        env.update(ECGDX_WEB_DATA_DIR=str(self.tmp / "data"), ECGDX_UPLOAD_RATE_LIMIT="0", LOG_LEVEL="WARNING")
        if self.model:
            env["ECGDX_MODEL_PATH"] = self.model
        exe = shutil.which("ecgdx", path=str(Path(sys.executable).parent)) or "ecgdx"
        self.proc = subprocess.Popen([exe, "serve", "--port", str(port), "--threads", str(self.threads)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while _request(f"{base}/api/v1/health") == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                sys.exit(f"web_load: the server did not start: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.3)
        if _request(f"{base}/api/v1/health") != 200:
            self.__exit__()
            sys.exit("web_load: the server has no model: pass --model MODEL.onnx or --tiny-model")
        token = self._token(env)
        return base, token

    def _token(self, env: dict) -> str:
        code = ("import django; django.setup(); from django.contrib.auth.models import User; "
                "from rest_framework.authtoken.models import Token; "
                "u = User.objects.create_user('load', password='load-test-password-1'); "
                "print(Token.objects.create(user=u).key)")
        env = dict(env, DJANGO_SETTINGS_MODULE="ecgdx_web.settings.local", PYTHONPATH=str(ROOT / "web"))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise SystemExit(f"web_load: could not create the test user: {out.stderr[-2000:]}")
        return out.stdout.strip().splitlines()[-1]

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


if __name__ == "__main__":
    sys.exit(main())
