#!/usr/bin/env python
"""Django's command-line utility for the ecgdx web app (defaults to the local settings)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ecgdx_web.settings.local")
    # Files it creates (the SQLite database of `migrate`, collected files, keys) are the server user's
    # only: the database holds password hashes, token digests and results.
    os.umask(0o077)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
