"""Hostile and malformed inputs to the torch-free path: decoding, preprocessing, the gate, the model.

Every input must end in either a result or an ``EcgdxError`` with a message, never another
exception, a hang or a huge allocation. Property-based with hypothesis; the number of generated
inputs per test is ``ECGDX_FUZZ_EXAMPLES`` (default 60 for CI; the long run in docs/hostile-inputs.md
uses 2,500 per test, over 10,000 in all).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ecgdx.errors import EcgdxError, InvalidImageError  # noqa: E402
from ecgdx.inference import Predictor  # noqa: E402
from ecgdx.page.preprocessing import decode_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "normal" / "Normal_100.png"
EXAMPLES = int(os.environ.get("ECGDX_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("ECGDX_FUZZ_RANDOM") is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)


def _page_bytes() -> dict[str, bytes]:
    """The example page as small JPEG and PNG files (small: mutations then decode quickly)."""
    page = cv2.imread(str(EXAMPLE), cv2.IMREAD_GRAYSCALE)
    page = cv2.resize(page, (553, 393), interpolation=cv2.INTER_AREA)
    return {"jpeg": cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes(),
            "png": cv2.imencode(".png", page)[1].tobytes()}


PAGES = _page_bytes()


@pytest.fixture(scope="module")
def predictor():
    return Predictor()


def _must_be_clean(fn, data):
    """Run ``fn(data)``; only a result or an EcgdxError with a plain message is acceptable."""
    try:
        return fn(data)
    except EcgdxError as exc:
        message = str(exc)
        assert message and "Traceback" not in message and len(message) < 2000
        return exc


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None, insert: bytes) -> bytes:
    out = bytearray(data)
    for position, value in flips:
        out[position % len(out)] = value
    if insert:
        at = flips[0][0] % len(out) if flips else len(out) // 2
        out[at:at] = insert
    if cut is not None:
        out = out[: max(0, cut % (len(out) + 1))]
    return bytes(out)


mutations = st.tuples(
    st.sampled_from(sorted(PAGES)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=40),
    st.none() | st.integers(0, 10**6),
    st.binary(max_size=64),
)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash_the_decoder(data):
    result = _must_be_clean(decode_image, data)
    assert isinstance(result, EcgdxError | np.ndarray)


@FUZZ
@given(mutations)
def test_mutated_jpeg_and_png_files_never_crash_the_predictor(predictor, mutation):
    kind, flips, cut, insert = mutation
    data = _mutate(PAGES[kind], flips, cut, insert)
    result = _must_be_clean(predictor.predict, data)
    if not isinstance(result, EcgdxError):
        assert result.gate is not None
        if result.label is not None:
            assert abs(sum(result.probabilities.values()) - 1) < 1e-5


@FUZZ
@given(st.integers(1, 70_000), st.integers(1, 70_000), st.sampled_from(["png", "bmp"]))
def test_huge_declared_dimensions_are_refused_from_the_header(width, height, kind):
    """A file that claims enormous dimensions is refused before any pixel is decoded."""
    data = _png_header_only(width, height) if kind == "png" else _bmp_header_only(width, height)
    result = _must_be_clean(lambda d: decode_image(d, max_pixels=60_000_000), data)
    if width * height > 60_000_000:
        assert isinstance(result, InvalidImageError) and "limit" in str(result)
    else:
        assert isinstance(result, EcgdxError)  # header only: truncated, never decoded


@FUZZ
@given(st.sampled_from(["html", "svg", "js", "php", "zip", "pdf", "gif", "exe"]), st.binary(max_size=256))
def test_polyglots_and_non_images_are_refused(kind, tail):
    payloads = {
        "html": b"<!DOCTYPE html><html><script>alert(1)</script></html>",
        "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>',
        "js": b"fetch('/api/v1/predictions').then(r => r.text())",
        "php": b"<?php system($_GET['c']); ?>",
        "zip": b"PK\x03\x04" + b"\x00" * 26,
        "pdf": b"%PDF-1.7\n1 0 obj<<>>endobj\n",
        "gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00",
        "exe": b"MZ\x90\x00\x03\x00\x00\x00",
    }
    result = _must_be_clean(decode_image, payloads[kind] + tail)
    assert isinstance(result, InvalidImageError)


def test_jpeg_with_html_appended_decodes_as_the_picture_only(predictor):
    """A JPEG+HTML polyglot is a valid JPEG: it is read as a picture; the HTML is never interpreted."""
    data = PAGES["jpeg"] + b"<html><script>alert(1)</script></html>"
    result = _must_be_clean(predictor.predict, data)
    assert not isinstance(result, EcgdxError) or "truncated" not in str(result)


def test_decompression_bomb_png_is_refused_without_decoding():
    """A 30000x30000 all-zero PNG is ~1 MB compressed and 900 MB decoded: refused from the header."""
    data = _bomb_png(30_000, 30_000)
    assert len(data) < 2_000_000
    with pytest.raises(InvalidImageError, match="limit"):
        decode_image(data)


def test_zero_byte_and_oversized_inputs():
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")
    big = PAGES["png"] + b"\x00" * (100 * 1024 * 1024)
    with pytest.raises(InvalidImageError, match="larger than"):
        decode_image(big)


# ----------------------------------------------------------------------------------------- helpers


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def _bmp_header_only(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


def _bomb_png(width: int, height: int) -> bytes:
    """A real, complete gray PNG of zeros, streamed through zlib without building the pixels."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    idat = b"".join(parts)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
