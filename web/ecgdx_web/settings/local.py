"""A workstation or a small lab server (``ecgdx serve``, ``manage.py runserver``).

The secret key is generated once per install and kept in the data directory (file mode 0600),
never in the repository. DEBUG is on for ``manage.py runserver`` unless DEBUG=0; ``ecgdx serve``
sets DEBUG=0. Static files are served straight from the apps (no collectstatic needed).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from ecgdx_web.env import env_bool
from ecgdx_web.settings.base import *  # noqa: F403
from ecgdx_web.settings.base import DATA_DIR, SECRET_KEY, STATIC_ROOT


def _install_secret_key(data_dir: Path) -> str:
    """The per-install key in DATA_DIR/secret_key, created (0600) on first use."""
    path = data_dir / "secret_key"
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(50))
        key = path.read_text().strip()
    except FileExistsError:  # another process created it between exists() and open()
        key = path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot create the secret key file {path}: {exc}") from exc
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path} holds a secret key shorter than 50 characters; delete it")
    return key


SECRET_KEY = SECRET_KEY or _install_secret_key(DATA_DIR)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing STATIC_ROOT
DEBUG = env_bool("DEBUG", True)
WHITENOISE_USE_FINDERS = True
ECGDX_ANONYMOUS_DEMO = env_bool("ECGDX_ANONYMOUS_DEMO", True)
ECGDX_ALLOW_SIGNUP = env_bool("ECGDX_ALLOW_SIGNUP", True)
