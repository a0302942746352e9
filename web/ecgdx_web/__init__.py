"""Django project of the ecgdx clinician web app (see docs/web.md)."""
