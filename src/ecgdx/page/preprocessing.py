"""Turn a picture of a paper 12-lead ECG into the model's input tensor (numpy + OpenCV only).

Pipeline (``preprocess``)::

    decode_image -> grayscale uint8 -> crop_trace_area (spec.crop == "auto")
    -> resize to 2 x (spec.height, spec.width) -> CLAHE (spec.clahe_clip > 0)
    -> median filter (spec.median_ksize > 1) -> halve (INTER_AREA) -> float32 / 255, shape (1, H, W)

CLAHE and the median run at twice the output size rather than at the upload's own resolution, so
that a full-resolution photo and a half-size copy of it give the same tensor; see ``preprocess``.

With ``spec.layout == "canonical"`` the crop is replaced by ``ecgdx.page.layout.canonical_page``: every
lead redrawn into one fixed 3x4 + rhythm layout on white paper, so the print template (grid, 3x4 or
6x2 arrangement, labels) is not visible to the model; see ``preprocess``.

Output convention: 1.0 = white paper, 0.0 = ink. Everything is deterministic: the same pixels give
the same tensor whether they arrive as a path, bytes, a file object or a decoded array.

``decode_image`` never fully decodes an image before checking its header: the pixel size is read
from the PNG/JPEG/BMP/WebP/TIFF header and oversized images (decompression bombs) are refused, and
truncated JPEG/PNG files are refused instead of being returned half grey.

``locate_trace_area`` finds the trace area of an EDAN SE-3 style printout from its content (the
square 1 mV calibration pulses at the left of every row, the header text lines above them and the
footer text line below them); see its docstring.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ecgdx.errors import InvalidImageError
from ecgdx.labels import TEMPLATES, UNKNOWN_TEMPLATE
from ecgdx.page.analysis import PageAnalysis
from ecgdx.page.primitives import (
    GRID_LEVEL,
    WORK_WIDTH,
    as_gray,
    box_between_text,
    grid_strength,
    shrink,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "LAYOUTS",
    "MIN_IMAGE_SIDE",
    "PreprocessDetails",
    "PreprocessSpec",
    "crop_trace_area",
    "decode_image",
    "detect_template",
    "locate_trace_area",
    "preprocess",
    "preprocess_with_details",
]

DEFAULT_MAX_PIXELS = 60_000_000
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
# Below this an ECG page cannot hold readable traces; it is almost certainly an icon or a thumbnail.
MIN_IMAGE_SIDE = 64

# PreprocessSpec.layout values: the page as printed, or the leads redrawn by ecgdx.page.layout.
LAYOUTS = ("page", "canonical")

_SUPPORTED = "not a supported image type (expected JPEG, PNG, BMP, TIFF or WebP)"


# --------------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessSpec:
    """Every parameter of ``preprocess``; stored with each model so inference repeats training exactly.

    Fields:
        height, width: output size in pixels (1..8192).
        keep_aspect: False stretches the crop to height x width (the aspect ratio is lost but every
            output pixel shows page content); True scales the crop to fit inside height x width and
            pads the rest with white paper (value 1.0), centred.
        crop: "auto" = cut out the trace area with ``locate_trace_area``; "none" = use the whole page.
        clahe_clip: CLAHE contrast clip limit; 0 disables CLAHE.
        clahe_tile: CLAHE tile grid size (tiles per side, 1..64).
        median_ksize: median filter kernel, in pixels of the crop resized to twice the output size
            (where CLAHE and the median run); 0 or 1 disables, else odd.
        max_pixels: largest accepted image, width * height, checked before decoding.
        max_bytes: largest accepted encoded file in bytes.
        version: pipeline version; bump when the algorithm changes so cached tensors are invalidated.
        layout: "page" = the (cropped) page as printed; "canonical" = ``ecgdx.page.layout.canonical_page``
            (leads redrawn into one template-free layout) at height x width, without CLAHE and
            median (see ``preprocess``); pages without a recognisable lead layout fall back to
            "page" (``PreprocessDetails.layout_method`` says which happened).

    Compatibility: fields added after the first release (``layout``) are written by ``to_dict`` only
    when they differ from their default, so a default spec serialises exactly as before (stored
    model specs and cache keys stay valid) and ``from_dict`` of an old dict gives the old behaviour.
    """

    height: int = 384
    width: int = 384
    keep_aspect: bool = False
    crop: str = "auto"
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    median_ksize: int = 3
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    version: int = 1
    layout: str = "page"

    def __post_init__(self) -> None:
        _check_int("height", self.height, 1, 8192)
        _check_int("width", self.width, 1, 8192)
        if not isinstance(self.keep_aspect, bool):
            raise ValueError(f"keep_aspect must be true or false, got {self.keep_aspect!r}")
        if self.crop not in ("auto", "none"):
            raise ValueError(f"crop must be 'auto' or 'none', got {self.crop!r}")
        clip = self.clahe_clip
        if (
            isinstance(clip, bool)
            or not isinstance(clip, int | float | np.integer | np.floating)
            or not (0 <= clip < math.inf)
        ):
            raise ValueError(f"clahe_clip must be a finite number >= 0 (0 disables), got {clip!r}")
        # Normalise to float so to_dict() is stable whether 2 or 2.0 was given.
        object.__setattr__(self, "clahe_clip", float(clip))
        _check_int("clahe_tile", self.clahe_tile, 1, 64)
        _check_int("median_ksize", self.median_ksize, 0, 31)
        if self.median_ksize > 1 and self.median_ksize % 2 == 0:
            raise ValueError(f"median_ksize must be odd (or 0/1 to disable), got {self.median_ksize}")
        _check_int("max_pixels", self.max_pixels, 1, None)
        _check_int("max_bytes", self.max_bytes, 1, None)
        _check_int("version", self.version, 1, 1)
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {self.layout!r}")
        # numpy integers pass the checks; store plain ints so to_dict() stays JSON-serialisable.
        for name in ("height", "width", "clahe_tile", "median_ksize", "max_pixels", "max_bytes", "version"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields (later fields only when not at their default)."""
        d = dataclasses.asdict(self)
        for name, default in _LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> PreprocessSpec:
        """Build a spec from a mapping; missing keys take defaults, unknown keys raise ValueError."""
        if not hasattr(d, "keys"):
            raise ValueError(f"a preprocessing spec must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in d.keys() if k not in known)
        if unknown:
            raise ValueError(
                f"unknown preprocessing spec key(s): {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
            )
        return cls(**dict(d))


# Fields added after the first release, with their defaults: omitted from to_dict() at the default.
_LATER_FIELDS: dict[str, Any] = {"layout": "page"}


def _check_int(name: str, value: Any, lo: int, hi: int | None) -> None:
    """Raise ValueError unless value is an int (not bool) within [lo, hi] (hi None = unbounded)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        upper = f" and <= {hi}" if hi is not None else ""
        raise ValueError(f"{name} must be >= {lo}{upper}, got {value}")


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def decode_image(
    source: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> np.ndarray:
    """Read an image into a grayscale page.

    Args:
        source: a path (str / os.PathLike), encoded bytes (bytes, bytearray, memoryview), a binary
            file-like object with ``.read()``, or a decoded array: (H, W) gray, (H, W, 3) BGR or
            (H, W, 4) BGRA, dtype uint8, uint16, bool or float (floats in [0, 1] or [0, 255]).
            Encoded data may be JPEG, PNG, BMP, TIFF or WebP; the type is taken from the magic bytes,
            never from the file name.
        max_pixels: refuse images with width * height above this, read from the header before decoding.
        max_bytes: refuse encoded inputs larger than this many bytes.

    Returns:
        (H, W) uint8 C-contiguous array, 0 = black. Colour is converted with cv2.COLOR_BGR2GRAY,
        transparency is composited onto white paper, 16-bit data is scaled by 255/65535.
        JPEG EXIF orientation is applied. A (H, W) uint8 array input is returned as is (not copied).

    Raises:
        InvalidImageError: with a message a user can act on (names the file when a path was given).
    """
    if isinstance(source, np.ndarray):
        return _array_to_gray(source, "the image array", max_pixels)
    data, label = _read_source(source, max_bytes)
    return _decode_bytes(data, label, max_pixels)


def _read_source(source: Any, max_bytes: int) -> tuple[bytes, str]:
    """Encoded bytes of a path, bytes-like or file-like source, plus a label naming it in messages."""
    if isinstance(source, str | os.PathLike):
        return read_path(source, max_bytes)
    if isinstance(source, bytes | bytearray | memoryview):
        data = source.tobytes() if isinstance(source, memoryview) else bytes(source)
        label = "the uploaded image"
        _check_byte_count(len(data), max_bytes, label)
        return data, label
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        label = f"'{name}'" if isinstance(name, str) and name else "the uploaded image"
        try:
            data = source.read(max_bytes + 1)
        except (OSError, ValueError) as exc:
            raise InvalidImageError(f"{label}: cannot be read ({exc})") from exc
        if isinstance(data, str):
            raise InvalidImageError(f"{label}: was opened in text mode; open image files with 'rb'")
        if not isinstance(data, bytes | bytearray):
            raise InvalidImageError(f"{label}: read() returned {type(data).__name__}, expected bytes")
        _check_byte_count(len(data), max_bytes, label)
        return bytes(data), label
    raise InvalidImageError(
        f"cannot read an image from a {type(source).__name__}; "
        "pass a file path, bytes, a binary file object or a numpy array"
    )


def read_path(source: str | os.PathLike, max_bytes: int) -> tuple[bytes, str]:
    """Bytes of the file at source; every filesystem problem becomes an InvalidImageError naming it."""
    if isinstance(source, str) and not source.strip():
        raise InvalidImageError("no image file given (the path is empty)")
    path = Path(source)
    label = f"'{path}'"
    try:
        if not path.exists():
            raise InvalidImageError(f"{label}: file not found")
        if path.is_dir():
            raise InvalidImageError(f"{label}: is a directory, not an image file")
        if not path.is_file():
            raise InvalidImageError(f"{label}: is not a regular file")
        size = path.stat().st_size
        _check_byte_count(size, max_bytes, label)
        with path.open("rb") as fh:
            # Read at most one byte past the limit so a file growing underneath us cannot exhaust memory.
            data = fh.read(max_bytes + 1)
    except InvalidImageError:
        raise
    except OSError as exc:
        raise InvalidImageError(f"{label}: cannot be read ({exc.strerror or exc})") from exc
    except ValueError as exc:  # e.g. a NUL character in the path
        raise InvalidImageError(f"{label}: is not a usable file path ({exc})") from exc
    _check_byte_count(len(data), max_bytes, label)
    return data, label


def _check_byte_count(n: int, max_bytes: int, label: str) -> None:
    """Refuse empty and oversized encoded inputs."""
    if n == 0:
        raise InvalidImageError(f"{label}: is empty (0 bytes); it is not an image")
    if n > max_bytes:
        raise InvalidImageError(
            f"{label}: is larger than the limit of {max_bytes / 2**20:.0f} MiB; upload a smaller image"
        )


def _decode_bytes(data: bytes, label: str, max_pixels: int, jpeg_reduction: int = 1) -> np.ndarray:
    """Check header, size and completeness, then decode with OpenCV; returns (H, W) uint8.

    jpeg_reduction (1, 2, 4 or 8): decode a JPEG straight to grayscale at 1/n size. libjpeg scales
    in the DCT domain, several times faster than a full decode plus resize; other types ignore it.
    """
    kind = _sniff(data)
    if kind is None:
        raise InvalidImageError(f"{label}: {_SUPPORTED}; {_describe_unknown(data)}")
    width, height = _HEADER_READERS[kind](data, label)
    _check_dimensions(width, height, label, max_pixels)
    _check_complete(kind, data, label)
    # JPEG: IMREAD_COLOR / IMREAD_REDUCED_* apply EXIF orientation (phone photos). Others: UNCHANGED
    # keeps 16-bit and alpha.
    flags = cv2.IMREAD_COLOR if kind == "jpeg" else cv2.IMREAD_UNCHANGED
    if kind == "jpeg" and jpeg_reduction in _JPEG_REDUCED_FLAGS:
        flags = _JPEG_REDUCED_FLAGS[jpeg_reduction]
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:
        raise InvalidImageError(f"{label}: the {kind.upper()} data is corrupt and cannot be decoded") from exc
    if image is None or image.size == 0:
        raise InvalidImageError(f"{label}: the {kind.upper()} data is corrupt and cannot be decoded")
    return _array_to_gray(image, label, max_pixels)


def _sniff(data: bytes) -> str | None:
    """Image type from the magic bytes: 'jpeg', 'png', 'bmp', 'tiff', 'webp' or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _describe_unknown(data: bytes) -> str:
    """Human guess at what an unsupported input is (for the error message)."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%pdf"):
        return "it looks like a PDF document; export the ECG page as a JPEG or PNG image"
    if b"<svg" in head:
        return "it looks like an SVG drawing; export it as a PNG image"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "it looks like an HTML web page (perhaps a download saved an error page instead of the image)"
    if head.startswith(b"gif8"):
        return "it is a GIF image; convert it to PNG"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"hevc"):
        return "it is a HEIC/AVIF photo; save it as JPEG (most phones can)"
    sample = data[:4096]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.95 * max(len(text), 1):
        return "it looks like a text file"
    return "the data is not a recognised image format"


def _check_dimensions(width: int, height: int, label: str, max_pixels: int) -> None:
    """Refuse degenerate, tiny and oversized images (before or after decoding)."""
    if width <= 0 or height <= 0:
        raise InvalidImageError(
            f"{label}: the header gives an impossible size {width}x{height}; the file is corrupt"
        )
    if width * height > max_pixels:
        raise InvalidImageError(
            f"{label}: the image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} pixels; it was not decoded. Resize it (a page scan needs far fewer pixels)"
        )
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise InvalidImageError(
            f"{label}: the image is only {width}x{height} pixels; an ECG page needs at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} (a photo or scan of the whole page is expected)"
        )


def _truncated(label: str, kind: str) -> InvalidImageError:
    return InvalidImageError(
        f"{label}: the {kind} file is truncated or corrupt (incomplete download or copy?); upload the complete file"
    )


def _png_size(data: bytes, label: str) -> tuple[int, int]:
    """(width, height) from the PNG IHDR chunk."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _truncated(label, "PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_segments(data: bytes, label: str) -> tuple[tuple[int, int], int]:
    """Walk the JPEG marker segments: ((width, height) from SOFn, offset just after the SOS header)."""
    size = None
    pos = 2
    n = len(data)
    while pos < n:
        if data[pos] != 0xFF:
            # Stray bytes between segments: libjpeg skips them with a warning, so do we.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length field
            continue
        if marker == 0xD9:
            break
        if pos + 2 > n:
            break
        seg_len = (data[pos] << 8) | data[pos + 1]
        if seg_len < 2:
            raise _truncated(label, "JPEG")
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 7 > n:
                break
            height = (data[pos + 3] << 8) | data[pos + 4]
            width = (data[pos + 5] << 8) | data[pos + 6]
            size = (width, height)
        if marker == 0xDA:
            if size is None:
                break
            return size, pos + seg_len
        pos += seg_len
    raise _truncated(label, "JPEG")


def _jpeg_size(data: bytes, label: str) -> tuple[int, int]:
    return _jpeg_segments(data, label)[0]


def _bmp_size(data: bytes, label: str) -> tuple[int, int]:
    """(width, height) from the BMP DIB header (core or info header)."""
    dib = struct.unpack_from("<I", data, 14)[0]
    if dib == 12:
        width, height = struct.unpack_from("<HH", data, 18)
    elif dib >= 40 and len(data) >= 26:
        width, height = struct.unpack_from("<ii", data, 18)
    else:
        raise _truncated(label, "BMP")
    return width, abs(height)


def _webp_size(data: bytes, label: str) -> tuple[int, int]:
    """(width, height) from the first WebP chunk (VP8, VP8L or VP8X)."""
    if len(data) < 30:
        raise _truncated(label, "WebP")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise _truncated(label, "WebP")
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise _truncated(label, "WebP")
        bits = struct.unpack_from("<I", data, 21)[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise InvalidImageError(f"{label}: unsupported WebP variant ({chunk!r} chunk)")


def _tiff_size(data: bytes, label: str) -> tuple[int, int]:
    """(width, height) from the first IFD of a classic or BigTIFF file."""
    try:
        order = "<" if data[:2] == b"II" else ">"
        big = struct.unpack_from(order + "H", data, 2)[0] == 43
        if big:
            ifd = struct.unpack_from(order + "Q", data, 8)[0]
            count = struct.unpack_from(order + "Q", data, ifd)[0]
            entry_size, first, value_at = 20, ifd + 8, 12
        else:
            ifd = struct.unpack_from(order + "I", data, 4)[0]
            count = struct.unpack_from(order + "H", data, ifd)[0]
            entry_size, first, value_at = 12, ifd + 2, 8
        found: dict[int, int] = {}
        for i in range(min(count, 4096)):
            base = first + i * entry_size
            tag, typ = struct.unpack_from(order + "HH", data, base)
            if tag not in (256, 257):
                continue
            fmt = {3: "H", 4: "I", 16: "Q"}.get(typ)
            if fmt is None:
                continue
            found[tag] = struct.unpack_from(order + fmt, data, base + value_at)[0]
    except struct.error:
        raise _truncated(label, "TIFF") from None
    if 256 not in found or 257 not in found:
        raise _truncated(label, "TIFF")
    return found[256], found[257]


_HEADER_READERS = {
    "jpeg": _jpeg_size,
    "png": _png_size,
    "bmp": _bmp_size,
    "webp": _webp_size,
    "tiff": _tiff_size,
}


def _check_complete(kind: str, data: bytes, label: str) -> None:
    """Refuse files cut short: OpenCV would silently return a partly grey image for JPEG/PNG."""
    if kind == "jpeg":
        _, scan_start = _jpeg_segments(data, label)
        # Inside entropy-coded data every 0xFF is followed by 0x00 or RSTn, so FFD9 after SOS is the EOI.
        if data.rfind(b"\xff\xd9", scan_start) < 0:
            raise _truncated(label, "JPEG")
    elif kind == "png":
        if data.rfind(b"IEND\xaeB`\x82", max(0, len(data) - 4096)) < 0:
            raise _truncated(label, "PNG")
    elif kind == "webp":
        riff_size = struct.unpack_from("<I", data, 4)[0]
        if len(data) < riff_size + 8:
            raise _truncated(label, "WebP")
    elif kind == "bmp" and struct.unpack_from("<I", data, 14)[0] >= 40 and len(data) >= 34:
        offset = struct.unpack_from("<I", data, 10)[0]
        width, height = struct.unpack_from("<ii", data, 18)
        bpp, compression = struct.unpack_from("<HI", data, 28)
        if compression in (0, 3):  # uncompressed: the pixel array size is known exactly
            stride = ((abs(width) * bpp + 31) // 32) * 4
            if len(data) < offset + stride * abs(height):
                raise _truncated(label, "BMP")


def _array_to_gray(image: np.ndarray, label: str, max_pixels: int) -> np.ndarray:
    """(H, W[, C]) uint8/uint16/bool/float array -> (H, W) uint8 gray; alpha composited onto white."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise InvalidImageError(
            f"{label}: has shape {image.shape}; expected (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA"
        )
    height, width = image.shape[:2]
    _check_dimensions(width, height, label, max_pixels)
    image = _to_uint8(image, label)
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    gray = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_BGR2GRAY)
    if image.shape[2] == 4:
        alpha = image[:, :, 3]
        if alpha.min() < 255:
            # Transparent areas are blank paper, not black ink.
            a = alpha.astype(np.float32) / 255.0
            gray = np.rint(gray * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return gray


def _to_uint8(image: np.ndarray, label: str) -> np.ndarray:
    """Scale any supported dtype to uint8 (uint16 by 255/65535, floats from [0, 1] or [0, 255])."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    if image.dtype in (np.float32, np.float64):
        if not np.all(np.isfinite(image)):
            raise InvalidImageError(f"{label}: contains NaN or infinite values")
        scale = 255.0 if float(image.max()) <= 1.0 else 1.0
        return np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)
    raise InvalidImageError(f"{label}: has unsupported pixel type {image.dtype}; expected 8- or 16-bit")


# --------------------------------------------------------------------------------------------------
# Trace-area location
# --------------------------------------------------------------------------------------------------

_JPEG_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                       8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
# Fallback crop as fractions of the page (x0, y0, x1, y1): on EDAN SE-3 pages the header text ends
# near 17.5 % of the height and the footer text starts near 97.5 %.
_FALLBACK_BOX = (0.02, 0.19, 0.98, 0.965)
# A detected box narrower or lower than this share of the page is not trusted.
_MIN_BOX_SHARE = 0.3
# CLAHE and the median filter run at this multiple of the output size (see preprocess).
_MID_FACTOR = 2


@dataclass(frozen=True)
class _Layout:
    """What the analysis found. box: (x0, y0, x1, y1) in ORIGINAL pixels, x1/y1 exclusive.

    method: 'pulses', 'traces' or 'fallback'. pulses: trace rows marked by calibration pulses.
    grid: grid strength of the trace area in gray levels (see grid_strength).
    """

    box: tuple[int, int, int, int]
    method: str
    pulses: int
    grid: float


def locate_trace_area(gray: np.ndarray) -> tuple[int, int, int, int]:
    """Box around the ECG traces, excluding the printed header and footer.

    Args:
        gray: (H, W) uint8 page (``decode_image`` output), any resolution.

    Returns:
        (x0, y0, x1, y1) in pixels of ``gray``, x1/y1 exclusive; at least 30 % of each side.

    How: the page is shrunk by an integer factor to ~1100 px wide, its paper background is flattened
    (so shadows in photos do not look like ink) and dark ink is split into connected components.
    The square 1 mV calibration pulses (narrow outline components about 10 mm tall, aligned in one
    column at the left of every trace row) give the rows. Header = lines of >= 3 small glyphs (and
    long rules) that end above the middle of the first pulse; footer = lines of glyphs that start
    below the last pulse's baseline. The box runs from just below the header to just above the
    footer, and across all ink in between plus 1 % of the width. Without pulses, long trace
    components stand in for them; if that fails too, or the box is implausibly small, a fixed
    fraction of the page is used (``_FALLBACK_BOX``). Where a trace or pulse is printed over the
    header text (tall R waves, pages with a measurement block), text exclusion wins and the trace
    top is clipped.
    """
    return _analyse(as_gray(gray)).box


def crop_trace_area(gray: np.ndarray) -> np.ndarray:
    """(h, w) uint8 view of ``gray`` inside ``locate_trace_area(gray)``."""
    gray = as_gray(gray)
    x0, y0, x1, y1 = _analyse(gray).box
    return gray[y0:y1, x0:x1]


def detect_template(gray: np.ndarray) -> str:
    """Print template of a (H, W) uint8 page: '3x4_grid', '6x2_nogrid' or 'unknown'.

    Gridded pages with 4 trace rows (3 lead rows + rhythm strip) are '3x4_grid', and so are the
    dataset's rarer gridded variants with 6 rows (6x2 leads without rhythm strip, or 3 long strips
    printed twice) that its labels file under the same template. Pages without grid with 7 rows
    (6 + rhythm strip) are '6x2_nogrid'. Anything else is 'unknown'. About 10 ms per page.
    """
    return _template_of(_analyse(as_gray(gray)))


def _template_of(layout: _Layout) -> str:
    has_grid = layout.grid >= GRID_LEVEL
    if has_grid and layout.pulses in (4, 6):
        return TEMPLATES[0]
    if not has_grid and layout.pulses == 7:
        return TEMPLATES[1]
    return UNKNOWN_TEMPLATE


def _analyse(gray: Any) -> _Layout:
    """Trace-area box, trace-row count and grid strength of a (H, W) uint8 page or its ``PageAnalysis``."""
    analysis = PageAnalysis.of(gray)
    gray, factor, flat, ink, boxes = analysis.gray, analysis.factor, analysis.flat, analysis.ink, analysis.boxes
    pulses, rows = analysis.pulses
    box = None
    method = "pulses"
    if rows >= 2:
        first, last = pulses[0], pulses[-1]
        pulse_h = int(pulses[:, 3].min())  # one pulse; stacked pulses of touching rows are taller
        # Some pages print the first pulse over the last header line, so header text may end as low as
        # half-way down the first pulse; the first row's lead labels sit lower, on its baseline.
        header_limit = int(first[1]) + pulse_h // 2
        # Footer text starts below the last row's baseline (= bottom of its pulse).
        footer_limit = int(last[1] + last[3]) + 1
        box = box_between_text(boxes, ink, header_limit, footer_limit)
    if box is None:
        box = _box_from_traces(boxes, ink)
        method = "traces"
    if box is None or not _plausible(box, flat.shape):
        box = _fraction_box(flat.shape)
        method = "fallback"
    grid = grid_strength(flat, box)
    return _Layout(_to_original(box, factor, flat.shape, gray.shape), method, rows, grid)


def _box_from_traces(boxes: np.ndarray, ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """Without pulses: the rows are spanned by long trace components (wider than 20 % of the page)."""
    height, width = ink.shape
    x, y, w, h = boxes.T
    traces = (w >= 0.2 * width) & (h >= 0.02 * height)
    if not traces.any():
        return None
    return box_between_text(boxes, ink, int(y[traces].min()), int((y + h)[traces].max()) + 1)


def _plausible(box: tuple[int, int, int, int], shape: tuple[int, int]) -> bool:
    height, width = shape
    x0, y0, x1, y1 = box
    return (x1 - x0) >= _MIN_BOX_SHARE * width and (y1 - y0) >= _MIN_BOX_SHARE * height


def _fraction_box(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    height, width = shape
    fx0, fy0, fx1, fy1 = _FALLBACK_BOX
    return round(fx0 * width), round(fy0 * height), round(fx1 * width), round(fy1 * height)


def _to_original(
    box: tuple[int, int, int, int], factor: int, work_shape: tuple[int, int], shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Working-image box -> original pixels (edges touching the working border map to the page border)."""
    work_h, work_w = work_shape
    height, width = shape
    x0, y0, x1, y1 = box
    ox1 = width if x1 >= work_w else min(width, x1 * factor)
    oy1 = height if y1 >= work_h else min(height, y1 * factor)
    return x0 * factor, y0 * factor, ox1, oy1


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessDetails:
    """What ``preprocess_with_details`` did, for display ("what the model saw") and debugging.

    original_size: (height, width) of the decoded page in pixels.
    crop_box: (x0, y0, x1, y1) in original pixels, x1/y1 exclusive (whole page when spec.crop == "none").
    crop_method: 'pulses', 'traces', 'fallback' or 'none' (see ``locate_trace_area``).
    template: '3x4_grid', '6x2_nogrid' or 'unknown' (always 'unknown' when spec.crop == "none").
    cropped: (h, w) uint8 crop of the grayscale page, before contrast, denoising and resizing (also
        reported, not used, when the canonical layout was drawn).
    model_input: (spec.height, spec.width) uint8 image the model saw (the tensor * 255).
    layout_method: 'page' (spec.layout == "page"), 'canonical' (the leads were redrawn) or
        'fallback' (spec.layout == "canonical" but no lead layout was found: the crop was used).
    scale: original pixels per working pixel (``load_page``): 1 for pages up to twice the working
        width, 2, 4 or 8 for larger uploads; ``cropped`` is at working scale, ``crop_box`` is not.
    layout_problem: with layout_method 'fallback', why no lead layout was found (the layout's own
        words, e.g. "6 trace rows without the lead separator at 5 s: ..."); else "".
    """

    original_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    crop_method: str
    template: str
    cropped: np.ndarray
    model_input: np.ndarray
    layout_method: str = "page"
    scale: int = 1
    layout_problem: str = ""


@dataclasses.dataclass(frozen=True)
class Page:
    """A decoded page at working scale: gray (H, W) uint8, original (height, width), scale factor."""

    gray: np.ndarray
    original_size: tuple[int, int]
    scale: int


def load_page(source: Any, spec: PreprocessSpec | None = None) -> Page:
    """Decode ``source`` (anything ``decode_image`` takes) at working scale.

    Every later step analyses the page at about ``WORK_WIDTH`` pixels wide and the model sees at
    most a few hundred, so an upload at least twice that wide (a 2213x1572 scan) is reduced by the
    largest power of two (2, 4, 8) that keeps it at least ``WORK_WIDTH`` wide: JPEGs are decoded
    reduced by libjpeg itself (several times faster than a full decode), other inputs are shrunk
    with INTER_AREA. Training pages (50%-scale PNGs, 1106 px wide) are used as they are, so a
    full-resolution upload reaches the model at the scale the model was trained on.
    """
    spec = spec or PreprocessSpec()
    if isinstance(source, Page):
        return source
    if isinstance(source, np.ndarray):
        gray = decode_image(source, max_pixels=spec.max_pixels, max_bytes=spec.max_bytes)
        return _reduce_decoded(gray)
    data, label = _read_source(source, spec.max_bytes)
    if _sniff(data) == "jpeg":
        width, height = _jpeg_size(data, label)
        _check_dimensions(width, height, label, spec.max_pixels)
        factor = _reduction_factor(width)
        if factor > 1:
            gray = _decode_bytes(data, label, spec.max_pixels, jpeg_reduction=factor)
            # EXIF rotation may swap the axes: report the original size in the decoded orientation.
            original = (height, width) if gray.shape[1] * factor >= width - factor else (width, height)
            return Page(gray, original, factor)
    return _reduce_decoded(_decode_bytes(data, label, spec.max_pixels))


def _reduction_factor(width: int) -> int:
    """Largest of 1, 2, 4, 8 that keeps ``width / factor >= WORK_WIDTH``."""
    factor = 1
    while factor < 8 and width / (factor * 2) >= WORK_WIDTH:
        factor *= 2
    return factor


def _reduce_decoded(gray: np.ndarray) -> Page:
    factor = _reduction_factor(gray.shape[1])
    if factor == 1:
        return Page(gray, gray.shape, 1)
    small = cv2.resize(gray, (gray.shape[1] // factor, gray.shape[0] // factor), interpolation=cv2.INTER_AREA)
    return Page(small, gray.shape, factor)


def preprocess(image: Any, spec: PreprocessSpec | None = None) -> np.ndarray:
    """Model input for one page.

    Steps: decode -> grayscale -> crop (spec.crop == "auto") -> resize to twice the output size
    (INTER_AREA when shrinking) -> CLAHE -> median filter -> halve with INTER_AREA -> / 255.
    CLAHE and the median run at twice the output size, not at the upload's resolution: that makes a
    full-resolution photo and a half-size copy of it give the same tensor (a 3x3 median means the
    same thing for both), and keeps a 2213x1572 page under ~25 ms (CLAHE alone on its full-size
    crop takes ~30 ms).

    spec.layout == "canonical": the crop, CLAHE and median are replaced by
    ``ecgdx.page.layout.canonical_page(gray, spec.height, spec.width)`` (see ``_canonical_input`` for why
    CLAHE and the median are skipped); a page without a recognisable lead layout falls back to the
    crop pipeline above, recorded as ``PreprocessDetails.layout_method == "fallback"``.

    Args:
        image: anything ``decode_image`` accepts (path, bytes, binary file object or array).
        spec: parameters; None = ``PreprocessSpec()``.

    Returns:
        (1, spec.height, spec.width) float32 in [0, 1]; 1.0 = white paper, 0.0 = ink.
    """
    return preprocess_with_details(image, spec)[0]


def preprocess_with_details(
    image: Any, spec: PreprocessSpec | None = None
) -> tuple[np.ndarray, PreprocessDetails]:
    """``preprocess`` plus a ``PreprocessDetails`` record of the crop and of the image the model saw."""
    spec = spec or PreprocessSpec()
    page = load_page(image, spec)
    gray = page.gray
    height, width = gray.shape
    analysis = PageAnalysis(gray)  # read by the crop and by the canonical layout alike
    if spec.crop == "auto":
        layout = _analyse(analysis)
        box, method, template = layout.box, layout.method, _template_of(layout)
    else:
        box, method, template = (0, 0, width, height), "none", UNKNOWN_TEMPLATE
    x0, y0, x1, y1 = box
    cropped = gray[y0:y1, x0:x1]
    if page.scale != 1:
        box = tuple(min(round(v * page.scale), limit) for v, limit in
                    zip(box, (page.original_size[1], page.original_size[0]) * 2, strict=True))
    out, layout_method, layout_problem = None, "page", ""
    if spec.layout == "canonical":
        out, layout_problem = _canonical_input(analysis, spec)
        layout_method = "fallback" if out is None else "canonical"
    if out is None:
        out = _enhance_and_resize(cropped, spec)
    tensor = (out.astype(np.float32) / np.float32(255.0))[None]
    details = PreprocessDetails(page.original_size, box, method, template, cropped.copy(), out, layout_method,
                                page.scale, layout_problem)
    return tensor, details


# The canonical page's natural aspect (height, width): 4 rows of 30 mm over 10 s at 25 mm/s.
_CANONICAL_ASPECT = (384, 768)


def _canonical_input(gray: Any, spec: PreprocessSpec) -> tuple[np.ndarray | None, str]:
    """((spec.height, spec.width) uint8 canonical page, ""), or (None, why) when the page has no
    lead layout.

    No CLAHE and no median: the canonical page is already clean ink on white, CLAHE would stretch
    each tile by how much ink it holds (line darkness would then depend on the ECG and, through the
    number of leads per tile, on the layout) and the median exists to remove paper and JPEG noise
    that the redrawing has already dropped; it would only erode one-pixel-thin trace lines.
    keep_aspect=True draws at the canonical 1:2 aspect and pads with white paper, centred.
    """
    # Imported here: ecgdx.page.layout builds on this module's page analysis.
    from ecgdx.errors import NotAnEcgError
    from ecgdx.page.layout import canonical_page

    if spec.keep_aspect:
        scale = min(spec.height / _CANONICAL_ASPECT[0], spec.width / _CANONICAL_ASPECT[1])
        fit_h = min(spec.height, max(16, round(_CANONICAL_ASPECT[0] * scale)))
        fit_w = min(spec.width, max(16, round(_CANONICAL_ASPECT[1] * scale)))
    else:
        fit_h, fit_w = spec.height, spec.width
    if fit_h < 16 or fit_w < 16:
        # too small to draw 4 rows of traces; the crop path handles any size
        return None, f"a {spec.height} x {spec.width} px model input is too small to draw the lead layout"
    try:
        drawn = canonical_page(gray, height=fit_h, width=fit_w)
    except NotAnEcgError as error:
        return None, str(error)
    if (fit_h, fit_w) == (spec.height, spec.width):
        return drawn, ""
    canvas = np.full((spec.height, spec.width), 255, np.uint8)
    top, left = (spec.height - fit_h) // 2, (spec.width - fit_w) // 2
    canvas[top : top + fit_h, left : left + fit_w] = drawn
    return canvas, ""


def _enhance_and_resize(cropped: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(h, w) uint8 crop -> (spec.height, spec.width) uint8: contrast, denoise, resize, pad."""
    h, w = cropped.shape
    if spec.keep_aspect:
        scale = min(spec.height / h, spec.width / w)
        fit_h = min(spec.height, max(1, round(h * scale)))
        fit_w = min(spec.width, max(1, round(w * scale)))
    else:
        fit_h, fit_w = spec.height, spec.width
    mid = _resize_to(cropped, fit_h * _MID_FACTOR, fit_w * _MID_FACTOR)
    if spec.clahe_clip > 0:
        clahe = cv2.createCLAHE(clipLimit=spec.clahe_clip, tileGridSize=(spec.clahe_tile, spec.clahe_tile))
        mid = clahe.apply(mid)
    if spec.median_ksize > 1:
        mid = cv2.medianBlur(mid, spec.median_ksize)
    out = cv2.resize(mid, (fit_w, fit_h), interpolation=cv2.INTER_AREA)
    if (fit_h, fit_w) == (spec.height, spec.width):
        return out
    # Letterbox: pad with white paper after CLAHE so the padding does not skew its histograms.
    canvas = np.full((spec.height, spec.width), 255, np.uint8)
    top, left = (spec.height - fit_h) // 2, (spec.width - fit_w) // 2
    canvas[top : top + fit_h, left : left + fit_w] = out
    return canvas


def _resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) uint8 -> (height, width): area averaging when shrinking (thin trace lines survive),
    bilinear when enlarging; a large integer part of the shrink uses OpenCV's fast exact path."""
    h, w = image.shape
    if (h, w) == (height, width):
        return np.ascontiguousarray(image)
    factor = min(h // height, w // width)
    if factor >= 2:
        image = shrink(image, factor)
        h, w = image.shape
        if (h, w) == (height, width):
            return image
    interp = cv2.INTER_AREA if (height <= h and width <= w) else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interp)
