"""`ecgdx serve`: the clinician web app (Django, in the repository's web/ folder) on one machine;
`ecgdx worker`: a worker that runs analyses (Celery) on any machine that reaches the broker, the
database and the picture storage.

    ecgdx serve [--host 127.0.0.1] [--port 8000] [--model MODEL.onnx] [--data-dir DIR] [--threads 4] [--workers 1]
    ecgdx worker [--concurrency 1] [--model MODEL.onnx] [--data-dir DIR] [--nice 10]

`serve` starts ``--workers`` worker processes itself and stops them when it stops, so that uploads are
analysed with no other server: without ECGDX_BROKER_URL the queue is a folder in the data directory
(kombu's filesystem transport). With ECGDX_BROKER_URL (Redis) run workers with `ecgdx worker` and
``serve --workers 0`` or gunicorn (docs/web.md).

Applies the database migrations (SQLite in the data directory unless DATABASE_URL is set), makes
the data directory private (0700, its files 0600: the database holds password hashes, token digests
and results), loads the model (``--model``, else ``ECGDX_MODEL_PATH``, else the bundled one) and serves the app with
waitress, a production-quality pure-Python WSGI server, using the ``local`` settings with DEBUG off.
For a multi-user deployment use gunicorn with the production settings (docs/web.md).

Only the standard library is imported at module level so ``ecgdx --help`` stays fast; Django and
waitress come from the ``web`` extra (``pip install -e '.[web]'``) and are imported when it runs.
Never imports torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ecgdx.errors import EcgdxError

WEB_DIR_ENV = "ECGDX_WEB_DIR"
_WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` to a CLI's subparsers."""
    serve = subparsers.add_parser(
        "serve",
        help="run the clinician web app and REST API (needs the web extra)",
        description="Run the ecgdx web app: upload ECG pictures, see results with explanations, history, "
        "PDF reports and the REST API under /api/v1/. Research tool, not a medical device.",
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 = all)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--model", help="ONNX model (default: $ECGDX_MODEL_PATH, else the bundled model)")
    serve.add_argument("--data-dir", help="database, uploads and secret key "
                       "(default: $ECGDX_WEB_DATA_DIR, else ~/.local/share/ecgdx-web)")
    serve.add_argument("--threads", type=_threads, default=4, help="request threads (default 4)")
    serve.add_argument("--workers", type=_workers, default=1,
                       help="analysis worker processes to start and stop with the server (default 1; 0 = none, "
                       "when workers run elsewhere with `ecgdx worker`)")
    serve.set_defaults(func=serve_command)

    worker = subparsers.add_parser(
        "worker",
        help="run a worker that analyses uploaded pictures (needs the web extra)",
        description="Run an ecgdx analysis worker (Celery). It takes analyses from the broker (ECGDX_BROKER_URL, "
        "else the queue folder in the data directory), reads and writes the database (DATABASE_URL, else the "
        "data directory's SQLite) and the picture storage, like the web app. Start as many as you like, on "
        "any machines that reach all three; docs/web.md.",
    )
    worker.add_argument("--concurrency", type=_workers, default=1,
                        help="analyses at once in this worker (processes; default 1, one per CPU core is the most useful)")
    worker.add_argument("--model", help="ONNX model (default: $ECGDX_MODEL_PATH, else the bundled model)")
    worker.add_argument("--data-dir", help="as for serve: the data directory (SQLite, pictures, queue folder)")
    worker.add_argument("--nice", type=int, default=10,
                        help="lower this worker's CPU priority by this much, so that on a shared machine web "
                        "requests are answered first (default 10; 0 = as started)")
    worker.add_argument("--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    worker.set_defaults(func=worker_command)


def _whole_number(low: int, high: int, what: str = ""):
    """An argparse type: a whole number in low..high, with a message that says what was wrong."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low}..{high}{what}, got {value}")
        return value
    return parse


_port = _whole_number(1, 65535)
_threads = _whole_number(1, 64, " threads")
_workers = _whole_number(0, 64)


def web_dir() -> Path:
    """The Django project folder: $ECGDX_WEB_DIR, else web/ beside src/ in a source checkout."""
    explicit = os.environ.get(WEB_DIR_ENV)
    candidate = Path(explicit) if explicit else Path(__file__).resolve().parents[2] / "web"
    if not (candidate / "manage.py").is_file():
        raise EcgdxError(
            f"the web app was not found at {candidate}: `ecgdx serve` runs from a source checkout "
            f"installed with `pip install -e '.[web]'`, or set {WEB_DIR_ENV} to the checkout's web/ folder"
        )
    return candidate


def prepare_environment(args: argparse.Namespace) -> Path:
    """Environment for the local settings (the settings module reads it at import); returns web/."""
    missing = [name for name in ("django", "rest_framework", "drf_spectacular", "whitenoise", "waitress", "fpdf",
                                 "celery")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise EcgdxError(f"the web app needs the web extra ({', '.join(missing)} missing): "
                         "pip install -e '.[web]'")
    folder = web_dir()
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ecgdx_web.settings.local")
    os.environ.setdefault("DEBUG", "0")  # never show stack traces to users
    if getattr(args, "model", None):
        model = Path(args.model).expanduser()
        if not model.is_file():
            raise EcgdxError(f"--model {args.model}: no such file")
        os.environ["ECGDX_MODEL_PATH"] = str(model.resolve())
    if getattr(args, "data_dir", None):
        os.environ["ECGDX_WEB_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    if "ALLOWED_HOSTS" not in os.environ and hasattr(args, "host"):
        hosts = ["127.0.0.1", "localhost", "[::1]"]
        if args.host in _WILDCARD_HOSTS:
            hosts = ["*"]  # reachable under any name; set ALLOWED_HOSTS to restrict
        elif args.host not in hosts:
            hosts.append(args.host)
        os.environ["ALLOWED_HOSTS"] = ",".join(hosts)
    return folder


def make_private(data_dir: Path, database: Path | None) -> None:
    """Data directory 0700 and the SQLite database (with its journal files) 0600, also when an older
    version created them readable by everyone."""
    data_dir.chmod(0o700)
    if database is None:
        return
    for path in (database, *(database.with_name(database.name + suffix) for suffix in ("-journal", "-wal", "-shm"))):
        if path.exists():
            path.chmod(0o600)


def server_body_limit(settings) -> int:
    """waitress's own body limit: ECGDX_SERVER_MAX_BODY_BYTES, checked to be above what the upload handler
    refuses unread (2 x ECGDX_MAX_UPLOAD_BYTES + 1 MiB), so that too large uploads get the app's JSON 413."""
    refused_unread_above = 2 * settings.ECGDX_MAX_UPLOAD_BYTES + 1024 * 1024
    limit = settings.ECGDX_SERVER_MAX_BODY_BYTES
    if limit <= refused_unread_above:
        raise EcgdxError(f"ECGDX_SERVER_MAX_BODY_BYTES ({limit}) must be above {refused_unread_above} "
                         "(2 x ECGDX_MAX_UPLOAD_BYTES + 1 MiB), or too large uploads get the server's plain-text "
                         "error instead of the app's")
    return limit


def _sqlite_file(settings) -> Path | None:
    database = settings.DATABASES["default"]
    if "sqlite" not in database["ENGINE"] or str(database["NAME"]).startswith(":memory:"):
        return None
    return Path(database["NAME"])


def serve_command(args: argparse.Namespace) -> int:
    prepare_environment(args)
    # Everything this process creates (database, journals, uploads, keys) is for its own user only.
    os.umask(0o077)
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    body_limit = server_body_limit(settings)
    call_command("migrate", interactive=False, verbosity=0)
    make_private(Path(settings.DATA_DIR), _sqlite_file(settings))
    from diagnosis.inference_adapter import get_predictor

    from ecgdx.errors import ModelError

    print(f"ecgdx web: data in {settings.DATA_DIR}")
    try:
        print(f"ecgdx web: model {get_predictor().model_version}")
    except ModelError as exc:
        print(f"ecgdx web: warning: no model, uploads will be refused until one is given: {exc}", file=sys.stderr)
    host = "127.0.0.1" if args.host in _WILDCARD_HOSTS else args.host
    display_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{display_host}:{args.port}/"
    print(f"ecgdx web: open {url}  (create an account at {url}accounts/signup/; API docs at {url}api/v1/docs)")
    print("ecgdx web: research tool, not a medical device. Stop with Ctrl+C.", flush=True)

    from django.core.wsgi import get_wsgi_application
    from waitress import serve

    workers = WorkerProcesses(args.workers)
    workers.start()
    # SIGTERM (service managers, `kill`) stops the server like Ctrl+C, so the workers are stopped too.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        serve(
            get_wsgi_application(),
            host=args.host,
            port=args.port,
            threads=args.threads,
            ident="ecgdx",
            max_request_body_size=body_limit,
            clear_untrusted_proxy_headers=True,
        )
    finally:
        workers.stop()
    return 0


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


class WorkerProcesses:
    """``count`` `ecgdx worker` processes beside the server, restarted if one dies, stopped with it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "ecgdx", "worker", "--concurrency", "1"], env=dict(os.environ))

    def start(self) -> None:
        if not self.count:
            print("ecgdx web: no worker started (--workers 0): uploads wait until an `ecgdx worker` runs")
            return
        self.processes = [self._spawn() for _ in range(self.count)]
        print(f"ecgdx web: {self.count} analysis worker{'s' if self.count > 1 else ''} started "
              f"(pid {', '.join(str(p.pid) for p in self.processes)})", flush=True)
        self._watcher = threading.Thread(target=self._watch, name="ecgdx-worker-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(2.0):
            for i, process in enumerate(self.processes):
                if process.poll() is not None and not self._stopping.is_set():
                    print(f"ecgdx web: worker {process.pid} stopped (exit {process.returncode}); starting another",
                          file=sys.stderr, flush=True)
                    self.processes[i] = self._spawn()

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()  # Celery's warm shutdown: the running analysis finishes
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()  # its analysis is sent again by the next worker's recovery sweep
                process.wait(timeout=5)


def worker_command(args: argparse.Namespace) -> int:
    prepare_environment(args)
    os.umask(0o077)
    if args.nice:
        os.nice(args.nice)
    import django

    django.setup()
    from django.conf import settings
    from ecgdx_web.celery import app

    broker = settings.CELERY_BROKER_URL
    where = "the queue folder " + str(settings.BROKER_DIR) if broker.startswith("filesystem") else _without_password(broker)
    print(f"ecgdx worker: analyses from {where}, {args.concurrency} at a time; data in {settings.DATA_DIR}", flush=True)
    app.worker_main(["worker", f"--loglevel={args.loglevel}", f"--concurrency={args.concurrency}",
                     "--pool=prefork", f"--hostname=ecgdx-{os.getpid()}@%h", "--without-gossip", "--without-mingle"])
    return 0


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
