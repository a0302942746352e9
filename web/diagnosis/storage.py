"""Private file storage for uploads and derived pictures: outside every static or public folder.

Files here have no URL; they are served only by the authorised image views (``diagnosis.views``
and ``diagnosis.api.views``), which check that the analysis belongs to the requesting user.
"""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.utils import timezone


class PrivateStorage(FileSystemStorage):
    """FileSystemStorage rooted at settings.PRIVATE_MEDIA_ROOT (read on every use), with no URL."""

    def __init__(self) -> None:
        super().__init__(base_url=None, file_permissions_mode=0o600, directory_permissions_mode=0o700)

    @property
    def base_location(self):
        return str(settings.PRIVATE_MEDIA_ROOT)

    @property
    def location(self):
        return os.path.abspath(self.base_location)

    def url(self, name):
        raise ValueError("private files have no public URL; use the authorised image views")


_storage = PrivateStorage()


def private_storage() -> PrivateStorage:
    """The storage of every FileField of this app (a callable, so migrations never freeze the path)."""
    return _storage


def random_name(folder: str, extension: str) -> str:
    """'folder/YYYY/MM/<32 random hex>.<ext>': names say nothing about the patient or the upload."""
    now = timezone.now()
    return f"{folder}/{now:%Y}/{now:%m}/{secrets.token_hex(16)}.{extension.lstrip('.')}"
