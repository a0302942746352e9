"""Upload handling: files are held in memory only and never spooled to a temporary file on disk.

``LimitedMemoryUploadHandler`` replaces Django's memory + temporary-file handlers. It keeps at most
``ECGDX_MAX_UPLOAD_BYTES`` of each file; a larger file is marked ``too_large`` (its bytes are
dropped as they arrive) and the request gets ``upload_too_large = True``. A request whose declared
length is far beyond the limit is not parsed at all (nothing is read).
"""

from __future__ import annotations

from io import BytesIO

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict

# Multipart overhead allowed on top of the file itself before a request is refused unread.
_ENVELOPE_BYTES = 1024 * 1024


class LimitedMemoryUploadHandler(FileUploadHandler):
    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        limit = settings.ECGDX_MAX_UPLOAD_BYTES
        if content_length and content_length > 2 * limit + _ENVELOPE_BYTES:
            if self.request is not None:
                self.request.upload_too_large = True
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self._buffer = BytesIO()
        self._received = 0
        self._too_large = False

    def receive_data_chunk(self, raw_data, start):
        self._received += len(raw_data)
        if self._received > settings.ECGDX_MAX_UPLOAD_BYTES:
            if not self._too_large:
                self._too_large = True
                self._buffer = BytesIO()  # free what was kept: the file is refused anyway
        else:
            self._buffer.write(raw_data)
        return None  # consumed: no other handler sees (or stores) the data

    def file_complete(self, file_size):
        self._buffer.seek(0)
        uploaded = InMemoryUploadedFile(
            file=self._buffer,
            field_name=self.field_name,
            name=self.file_name,
            content_type=self.content_type,
            size=file_size,
            charset=self.charset,
            content_type_extra=self.content_type_extra,
        )
        uploaded.too_large = self._too_large
        if self._too_large and self.request is not None:
            self.request.upload_too_large = True
        return uploaded
