"""`ecgdx serve`: the clinician web app (Django, in the repository's web/ folder) on one machine.

    ecgdx serve [--host 127.0.0.1] [--port 8000] [--model MODEL.onnx] [--data-dir DIR] [--threads 4]

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
import sys
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
    serve.set_defaults(func=serve_command)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected 1..65535, got {value}")
    return value


def _threads(text: str) -> int:
    value = _port(text)
    if value > 64:
        raise argparse.ArgumentTypeError(f"expected 1..64 threads, got {value}")
    return value


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
    missing = [name for name in ("django", "rest_framework", "drf_spectacular", "whitenoise", "waitress", "fpdf")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise EcgdxError(f"the web app needs the web extra ({', '.join(missing)} missing): "
                         "pip install -e '.[web]'")
    folder = web_dir()
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ecgdx_web.settings.local")
    os.environ.setdefault("DEBUG", "0")  # never show stack traces to users
    if args.model:
        model = Path(args.model).expanduser()
        if not model.is_file():
            raise EcgdxError(f"--model {args.model}: no such file")
        os.environ["ECGDX_MODEL_PATH"] = str(model.resolve())
    if args.data_dir:
        os.environ["ECGDX_WEB_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    if "ALLOWED_HOSTS" not in os.environ:
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

    serve(
        get_wsgi_application(),
        host=args.host,
        port=args.port,
        threads=args.threads,
        ident="ecgdx",
        max_request_body_size=body_limit,
        clear_untrusted_proxy_headers=True,
    )
    return 0
