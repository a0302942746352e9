"""Tests of ecgdx.page.preprocessing: decoding and its refusals, trace-area crop, template detection, tensor.

Synthetic pages (tests/synthetic.py) carry exact ground truth. The real-data tests read
ECGDX_DATA_DIR (default <repo>/../shared/data) and are skipped only when that folder is absent.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from realdata import DATA_DIR, DEV_DIR, FULLRES_DIR, label_rows, require, sample_dev_rows
from synthetic import make_page as _make_page

from ecgdx.errors import InvalidImageError
from ecgdx.page.preprocessing import (
    PreprocessSpec,
    crop_trace_area,
    decode_image,
    detect_template,
    locate_trace_area,
    preprocess,
    preprocess_with_details,
)

TEMPLATES = ("3x4_grid", "6x2_nogrid")


@functools.lru_cache(maxsize=64)
def make_page(template="3x4_grid", width=1106, height=786, seed=0, color=False):
    """Cached synthetic page; its arrays are made read-only so no test can alter another's page."""
    page = _make_page(template, width=width, height=height, seed=seed, color=color)
    page.image.flags.writeable = False
    return page


def _encode(image: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, image, params or [])
    assert ok
    return buf.tobytes()


def _intersects(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _contains(outer: tuple[int, int, int, int], inner: tuple[int, int, int, int]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def _relative(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    height, width = shape[:2]
    return np.array(box, float) / np.array([width, height, width, height])


# --------------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------------


def test_spec_round_trip_and_defaults():
    spec = PreprocessSpec(height=256, width=512, keep_aspect=True, crop="none", clahe_clip=0, median_ksize=5)
    d = spec.to_dict()
    assert d["clahe_clip"] == 0.0 and isinstance(d["clahe_clip"], float)
    assert PreprocessSpec.from_dict(d) == spec
    assert PreprocessSpec.from_dict({}) == PreprocessSpec()
    assert set(PreprocessSpec().to_dict()) == {
        "height",
        "width",
        "keep_aspect",
        "crop",
        "clahe_clip",
        "clahe_tile",
        "median_ksize",
        "max_pixels",
        "max_bytes",
        "version",
    }


def test_spec_dict_is_json_serialisable_even_from_numpy_values():
    import json

    spec = PreprocessSpec(height=np.int64(128), width=np.int32(96), clahe_clip=np.float32(1.5))
    d = json.loads(json.dumps(spec.to_dict()))
    assert PreprocessSpec.from_dict(d) == spec
    assert type(spec.height) is int and type(spec.clahe_clip) is float


def test_spec_from_dict_names_unknown_keys():
    with pytest.raises(ValueError, match="colour_mode.*hieght|hieght.*colour_mode"):
        PreprocessSpec.from_dict({"height": 128, "hieght": 1, "colour_mode": "rgb"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 0},
        {"width": -5},
        {"height": 12.5},
        {"height": True},
        {"keep_aspect": "yes"},
        {"crop": "center"},
        {"clahe_clip": -1.0},
        {"clahe_clip": float("nan")},
        {"clahe_tile": 0},
        {"median_ksize": 4},
        {"median_ksize": -1},
        {"max_pixels": 0},
        {"max_bytes": 0},
        {"version": 2},
    ],
)
def test_spec_rejects_invalid_values(kwargs):
    with pytest.raises(ValueError):
        PreprocessSpec(**kwargs)


def test_spec_median_zero_and_one_disable_the_filter():
    page = make_page("6x2_nogrid", seed=3).image
    base = PreprocessSpec(clahe_clip=0)
    off0 = preprocess(page, PreprocessSpec(**{**base.to_dict(), "median_ksize": 0}))
    off1 = preprocess(page, PreprocessSpec(**{**base.to_dict(), "median_ksize": 1}))
    on = preprocess(page, base)
    assert np.array_equal(off0, off1)
    assert not np.array_equal(off0, on)


# --------------------------------------------------------------------------------------------------
# Synthetic pages: crop and template
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_keeps_all_traces_and_no_header_or_footer_text(template, color, seed):
    page = make_page(template, seed=seed, color=color)
    box = locate_trace_area(decode_image(page.image))
    assert _contains(box, page.trace_box), (box, page.trace_box)
    for text_box in page.header_boxes + page.footer_boxes:
        assert not _intersects(box, text_box), (box, text_box)


@pytest.mark.parametrize("template", TEMPLATES)
def test_crop_same_relative_box_at_full_and_half_scale(template):
    full = make_page(template, width=2212, height=1572, seed=5, color=True)
    gray_full = decode_image(full.image)
    half = cv2.resize(gray_full, (1106, 786), interpolation=cv2.INTER_AREA)
    drawn_half = decode_image(make_page(template, width=1106, height=786, seed=5, color=True).image)
    rel_full = _relative(locate_trace_area(gray_full), gray_full.shape)
    assert np.abs(rel_full - _relative(locate_trace_area(half), half.shape)).max() <= 0.01
    assert np.abs(rel_full - _relative(locate_trace_area(drawn_half), drawn_half.shape)).max() <= 0.01
    # The full-size crop must still honour the full-size ground truth.
    box = locate_trace_area(gray_full)
    assert _contains(box, full.trace_box)
    assert not any(_intersects(box, b) for b in full.header_boxes + full.footer_boxes)


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("degrade", ["half", "noise", "jpeg60"])
def test_template_and_crop_survive_scaling_noise_and_jpeg(template, degrade):
    page = make_page(template, seed=6, color=True)
    gray = decode_image(page.image)
    trace, texts = page.trace_box, page.header_boxes + page.footer_boxes
    if degrade == "half":
        gray = cv2.resize(gray, (553, 393), interpolation=cv2.INTER_AREA)
        # Ground truth at half size, rounded so that traces shrink and text grows (conservative).
        trace = (-(-trace[0] // 2), -(-trace[1] // 2), trace[2] // 2, trace[3] // 2)
        texts = [(b[0] // 2, b[1] // 2, -(-b[2] // 2), -(-b[3] // 2)) for b in texts]
    elif degrade == "noise":
        noise = np.random.default_rng(0).normal(0.0, 6.0, gray.shape)
        gray = np.clip(gray + noise, 0, 255).astype(np.uint8)
    else:
        gray = decode_image(_encode(gray, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 60]))
    assert detect_template(gray) == template
    box = locate_trace_area(gray)
    assert _contains(box, trace), (box, trace)
    assert not any(_intersects(box, b) for b in texts)


def test_crop_trace_area_matches_box():
    gray = decode_image(make_page("3x4_grid", seed=4).image)
    x0, y0, x1, y1 = locate_trace_area(gray)
    assert np.array_equal(crop_trace_area(gray), gray[y0:y1, x0:x1])


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("color", [False, True])
def test_detect_template_on_synthetic_pages(template, color):
    for seed in (0, 7):
        assert detect_template(decode_image(make_page(template, seed=seed, color=color).image)) == template


def test_detect_template_unknown_without_ecg_layout():
    blank = np.full((786, 1106), 255, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (786, 1106), dtype=np.uint8)
    assert detect_template(blank) == "unknown"
    assert detect_template(noise) == "unknown"


@pytest.mark.parametrize(
    "image",
    [
        np.full((786, 1106), 255, np.uint8),
        np.zeros((786, 1106), np.uint8),
        np.random.default_rng(1).integers(0, 256, (500, 700), dtype=np.uint8),
    ],
    ids=["white", "black", "noise"],
)
def test_crop_falls_back_to_a_large_box_when_nothing_is_found(image):
    height, width = image.shape
    x0, y0, x1, y1 = locate_trace_area(image)
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert x1 - x0 >= 0.3 * width and y1 - y0 >= 0.3 * height


def test_header_touching_first_pulse_is_still_cut_away():
    """A header line printed down into the first pulse (as on pages with a measurement block)."""
    page = make_page("6x2_nogrid", seed=0)
    image = page.image.copy()
    first_pulse_top = page.trace_box[1]
    text_y = first_pulse_top + 12
    cv2.putText(
        image, "RV5/SV1 : 2.358/0.818 mV", (20, text_y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, 20, 1, cv2.LINE_AA
    )
    box = locate_trace_area(image)
    assert box[1] > text_y  # the new header line is excluded
    assert box[1] < first_pulse_top + 0.05 * image.shape[0]  # but the first row is kept


# --------------------------------------------------------------------------------------------------
# preprocess
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec", [PreprocessSpec(), PreprocessSpec(height=200, width=320, clahe_clip=0, median_ksize=0)]
)
def test_preprocess_shape_dtype_range(spec):
    tensor = preprocess(make_page("3x4_grid", color=True).image, spec)
    assert tensor.shape == (1, spec.height, spec.width)
    assert tensor.dtype == np.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    # 1.0 = paper, 0.0 = ink: paper dominates, traces are dark.
    assert np.median(tensor) > 0.8
    assert tensor.min() < 0.3


def test_preprocess_keep_aspect_pads_with_white():
    spec = PreprocessSpec(height=300, width=300, keep_aspect=True)
    tensor, details = preprocess_with_details(make_page("6x2_nogrid").image, spec)
    assert tensor.shape == (1, 300, 300)
    # The crop is wider than tall, so rows at the top and bottom are padding.
    assert np.all(tensor[0, :5] == 1.0) and np.all(tensor[0, -5:] == 1.0)
    assert tensor[0, 150].min() < 0.5
    x0, y0, x1, y1 = details.crop_box
    assert (x1 - x0) > (y1 - y0)


def test_preprocess_crop_none_uses_whole_page():
    page = make_page("3x4_grid").image
    _, details = preprocess_with_details(page, PreprocessSpec(crop="none"))
    assert details.crop_box == (0, 0, page.shape[1], page.shape[0])
    assert details.crop_method == "none"
    assert not np.array_equal(preprocess(page, PreprocessSpec(crop="none")), preprocess(page))


def test_preprocess_details_describe_what_the_model_saw():
    page = make_page("6x2_nogrid", color=True, seed=2)
    tensor, details = preprocess_with_details(page.image)
    assert details.original_size == page.image.shape[:2]
    assert details.crop_box == locate_trace_area(decode_image(page.image))
    x0, y0, x1, y1 = details.crop_box
    assert details.cropped.shape == (y1 - y0, x1 - x0) and details.cropped.dtype == np.uint8
    assert details.template == "6x2_nogrid"
    assert details.crop_method == "pulses"
    assert details.model_input.dtype == np.uint8
    assert np.array_equal(np.rint(tensor[0] * 255).astype(np.uint8), details.model_input)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff", ".webp"])
def test_path_bytes_file_and_array_give_identical_tensors(tmp_path, ext):
    page = make_page("3x4_grid", color=True, seed=3).image
    path = tmp_path / f"page{ext}"
    data = _encode(page, ext)
    path.write_bytes(data)
    from_path = preprocess(path)
    assert np.array_equal(from_path, preprocess(str(path)))
    assert np.array_equal(from_path, preprocess(data))
    assert np.array_equal(from_path, preprocess(bytearray(data)))
    assert np.array_equal(from_path, preprocess(memoryview(data)))
    assert np.array_equal(from_path, preprocess(io.BytesIO(data)))
    assert np.array_equal(from_path, preprocess(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)))


def test_preprocess_is_deterministic():
    page = make_page("6x2_nogrid", seed=9).image
    assert np.array_equal(preprocess(page), preprocess(page.copy()))


# --------------------------------------------------------------------------------------------------
# decode_image: conversions
# --------------------------------------------------------------------------------------------------


def test_decode_colour_uses_bgr2gray():
    page = make_page("3x4_grid", color=True).image
    png = _encode(page, ".png")
    assert np.array_equal(decode_image(png), cv2.cvtColor(page, cv2.COLOR_BGR2GRAY))


def test_decode_16_bit_png_scales_to_8_bit():
    ramp = np.tile(np.arange(256, dtype=np.uint16) * 257, (80, 1))
    out = decode_image(_encode(ramp, ".png"))
    assert out.dtype == np.uint8
    assert np.array_equal(out, np.tile(np.arange(256, dtype=np.uint8), (80, 1)))


def test_decode_transparent_pixels_become_white_paper():
    bgra = np.zeros((100, 120, 4), np.uint8)  # black, fully transparent
    bgra[:, :60, 3] = 255  # left half opaque black
    out = decode_image(_encode(bgra, ".png"))
    assert np.all(out[:, :60] == 0) and np.all(out[:, 60:] == 255)


def test_decode_float_and_bool_arrays():
    f = np.full((80, 80), 0.5, np.float32)
    assert np.all(decode_image(f) == 128)
    b = np.zeros((80, 80), bool)
    b[0, 0] = True
    assert decode_image(b)[0, 0] == 255 and decode_image(b)[1, 1] == 0


def test_decode_grayscale_jpeg_and_single_channel_array():
    gray = make_page("6x2_nogrid").image
    jpg = decode_image(_encode(gray, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]))
    assert jpg.shape == gray.shape
    assert np.abs(jpg.astype(int) - gray).mean() < 3
    assert np.array_equal(decode_image(gray[:, :, None]), gray)


# --------------------------------------------------------------------------------------------------
# decode_image: refusals
# --------------------------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A structurally valid PNG that claims width x height pixels but holds almost no data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _jpeg_header_only(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    return b"\xff\xd8" + sof + sos + b"\x00" * 16 + b"\xff\xd9"


def _webp_vp8x_header(width: int, height: int) -> bytes:
    payload = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _bmp_header(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 0, 0, 0, 54)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + dib


@pytest.mark.parametrize(
    "make",
    [_png_header_only, _jpeg_header_only, _webp_vp8x_header, _bmp_header],
    ids=["png", "jpeg", "webp", "bmp"],
)
def test_decompression_bomb_is_refused_from_the_header(make):
    data = make(30000, 30000)
    assert len(data) < 1000
    with pytest.raises(InvalidImageError, match=r"30000x30000 = 900,000,000 pixels.*not decoded"):
        decode_image(data)


def test_pixel_limit_is_configurable():
    page = make_page("3x4_grid").image  # 1106 x 786 = 869,316 pixels
    with pytest.raises(InvalidImageError, match="869,316 pixels"):
        decode_image(_encode(page, ".png"), max_pixels=500_000)
    with pytest.raises(InvalidImageError, match="869,316 pixels"):
        preprocess(page, PreprocessSpec(max_pixels=500_000))


def test_byte_limit_is_enforced(tmp_path):
    data = _encode(make_page("3x4_grid").image, ".png")
    with pytest.raises(InvalidImageError, match="larger than the limit"):
        decode_image(data, max_bytes=1000)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(InvalidImageError, match="big.png.*larger than the limit"):
        decode_image(path, max_bytes=1000)


def test_empty_file_and_empty_bytes(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"empty\.jpg.*empty"):
        decode_image(path)
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")


@pytest.mark.parametrize("ext,fraction", [(".jpg", 0.5), (".jpg", 0.98), (".png", 0.5), (".png", 0.99)])
def test_truncated_file_is_refused(tmp_path, ext, fraction):
    data = _encode(make_page("3x4_grid", color=True).image, ext)
    path = tmp_path / f"cut{ext}"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InvalidImageError, match=r"cut\.(jpg|png).*truncated"):
        decode_image(path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("patient 42: ECG looked fine, see attached\n" * 5)
    with pytest.raises(InvalidImageError, match=r"notes\.jpg.*not a supported image type.*text file"):
        decode_image(path)


@pytest.mark.parametrize(
    "data,hint",
    [
        (b"<!DOCTYPE html><html><head><title>404 Not Found</title></head></html>", "HTML"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"GIF89a\x10\x00\x10\x00", "GIF"),
        (b"\x00\x01\x02\x03\xfe\xfd" * 50, "not a recognised image format"),
    ],
)
def test_non_image_bytes_name_what_they_look_like(data, hint):
    with pytest.raises(InvalidImageError, match=f"expected JPEG, PNG, BMP, TIFF or WebP.*{hint}"):
        decode_image(data)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(InvalidImageError, match=r"nope\.png.*not found"):
        decode_image(tmp_path / "nope.png")
    with pytest.raises(InvalidImageError, match="is a directory"):
        decode_image(tmp_path)
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image("")


def test_tiny_image_is_refused():
    with pytest.raises(InvalidImageError, match="only 40x30 pixels.*at least 64x64"):
        decode_image(_encode(np.zeros((30, 40), np.uint8), ".png"))
    with pytest.raises(InvalidImageError, match="at least 64x64"):
        decode_image(np.zeros((63, 500), np.uint8))


@pytest.mark.parametrize(
    "source",
    [
        np.zeros((100, 100, 2), np.uint8),
        np.zeros((100,), np.uint8),
        np.zeros((100, 100), np.int32),
        np.full((100, 100), np.nan, np.float32),
        object(),
        12345,
    ],
    ids=["two-channels", "1d", "int32", "nan", "object", "int"],
)
def test_unusable_sources_raise_invalid_image_error(source):
    with pytest.raises(InvalidImageError):
        decode_image(source)


def test_text_mode_file_object_is_refused(tmp_path):
    path = tmp_path / "page.png"
    path.write_bytes(_encode(make_page("3x4_grid").image, ".png"))
    with open(path, encoding="latin-1") as fh, pytest.raises(InvalidImageError, match="text mode"):
        decode_image(fh)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff", ".webp"])
def test_corrupted_bytes_never_escape_as_other_errors(ext):
    """Cut and damaged files either decode to a page or raise InvalidImageError: never cv2.error."""
    data = _encode(make_page("6x2_nogrid", color=True).image, ext)
    rng = np.random.default_rng(0)
    variants = [data[:n] for n in (1, 2, 3, 8, 16, 30, 64, 200, len(data) // 3)]
    for _ in range(12):
        damaged = bytearray(data)
        for pos in rng.integers(0, min(len(data), 400), 6):
            damaged[pos] = int(rng.integers(0, 256))
        variants.append(bytes(damaged))
    refused = 0
    for variant in variants:
        try:
            out = decode_image(variant)
        except InvalidImageError:
            refused += 1
            continue
        assert out.ndim == 2 and out.dtype == np.uint8
    assert refused >= len(variants) // 3


# --------------------------------------------------------------------------------------------------
# Real data (Mendeley ECG images)
# --------------------------------------------------------------------------------------------------

TEXT_DARK = 128  # gray level below which a pixel counts as printed ink in the independent check


def _text_truth(gray: np.ndarray) -> dict[str, int] | None:
    """Header/footer text limits of a page, found independently of ecgdx (rows at 1106 px width).

    Pulses: runs of >= 3.5 % of the page height of ink rows in the column strip where the
    calibration pulses print (4.4-6.0 % of the width). Text: ink dilated 9 px sideways merges glyphs
    into words; words are blobs at most 2.5 % of the height tall and 25 % of the width wide (trace
    rows are taller or wider). Header words start above the first pulse (and may reach at most half
    way down it); footer words start below the last pulse's bottom.
    """
    height, width = gray.shape
    if width != 1106:
        gray = cv2.resize(gray, (1106, round(height * 1106 / width)), interpolation=cv2.INTER_AREA)
        height, width = gray.shape
    dark = (gray < TEXT_DARK).astype(np.uint8)
    strip = dark[:, int(0.044 * width) : int(0.060 * width)].any(axis=1).astype(np.int8)
    edges = np.diff(np.concatenate([[0], strip, [0]]))
    runs = [(s, e) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)]
    pulses = [(s, e) for s, e in runs if e - s >= 0.035 * height]
    if not pulses:
        return None
    pulse_top, pulse_bottom = int(pulses[0][0]), int(pulses[-1][1])
    pulse_h = pulses[0][1] - pulses[0][0]
    words = cv2.dilate(dark, np.ones((1, 9), np.uint8))
    _, _, stats, _ = cv2.connectedComponentsWithStats(words, connectivity=8)
    x, y, w, h, area = stats[1:].T
    word = (h <= 0.025 * height) & (w <= 0.25 * width) & (area >= 4)
    header = word & (y < pulse_top) & (y + h <= pulse_top + 0.5 * pulse_h)
    footer = word & (y >= pulse_bottom)
    return {
        "height": height,
        "header_bottom": int((y + h)[header].max()) if header.any() else 0,
        "footer_top": int(y[footer].min()) if footer.any() else height,
        "pulse_top": pulse_top,
        "pulse_bottom": pulse_bottom,
        "pulse_h": int(pulse_h),
    }


def _check_crop_against_text(gray: np.ndarray, box: tuple[int, int, int, int]) -> str | None:
    """None if the crop excludes header and footer text, keeps every pulse row and is >= 60 % high."""
    truth = _text_truth(gray)
    if truth is None:
        return "independent check found no calibration pulses"
    h = truth["height"]
    top = box[1] / gray.shape[0] * h
    bottom = box[3] / gray.shape[0] * h
    problems = []
    if top < truth["header_bottom"]:
        problems.append(f"crop top {top:.0f} above header text bottom {truth['header_bottom']}")
    if bottom > truth["footer_top"]:
        problems.append(f"crop bottom {bottom:.0f} below footer text top {truth['footer_top']}")
    if top > truth["pulse_top"] + 0.5 * truth["pulse_h"]:
        problems.append(f"crop top {top:.0f} cuts the first row (pulse top {truth['pulse_top']})")
    if bottom < truth["pulse_bottom"]:
        problems.append(f"crop bottom {bottom:.0f} cuts the last row (pulse bottom {truth['pulse_bottom']})")
    if bottom - top < 0.6 * h:
        problems.append(f"crop only {(bottom - top) / h:.0%} of the page height")
    return "; ".join(problems) or None


def test_independent_text_check_catches_a_bad_crop():
    """The real-data check itself must fail on crops that include header or footer text."""
    require(DEV_DIR)
    gray = decode_image(DEV_DIR / label_rows(DEV_DIR)[0]["file"])
    height, width = gray.shape
    good = locate_trace_area(gray)
    assert _check_crop_against_text(gray, good) is None
    assert "header" in _check_crop_against_text(gray, (0, int(0.05 * height), width, good[3]))
    assert "footer" in _check_crop_against_text(gray, (0, good[1], width, height))
    assert "of the page height" in _check_crop_against_text(gray, (0, good[1], width, good[1] + 50))


def test_real_crops_exclude_header_and_footer_text_on_a_sample():
    """All 11 full-resolution JPEGs plus >= 60 PNGs spread over every class and template."""
    require(DEV_DIR)
    require(FULLRES_DIR)
    sample = sample_dev_rows(10)
    assert len(sample) >= 60
    assert {r["template"] for r in sample} == set(TEMPLATES)
    assert len({r["label"] for r in sample}) == 4
    paths = [DEV_DIR / r["file"] for r in sample] + [FULLRES_DIR / r["file"] for r in label_rows(FULLRES_DIR)]
    failures = []
    for path in paths:
        gray = decode_image(path)
        problem = _check_crop_against_text(gray, locate_trace_area(gray))
        if problem:
            failures.append(f"{path.name}: {problem}")
    assert not failures, "\n".join(failures)


def test_full_resolution_jpeg_matches_its_half_size_png():
    require(FULLRES_DIR)
    mads = []
    for row in label_rows(FULLRES_DIR):
        png_path = DATA_DIR / row["same_ecg_as"]
        if not png_path.is_file():
            continue
        jpg = decode_image(FULLRES_DIR / row["file"])
        png = decode_image(png_path)
        rel_jpg = _relative(locate_trace_area(jpg), jpg.shape)
        rel_png = _relative(locate_trace_area(png), png.shape)
        assert np.abs(rel_jpg - rel_png).max() <= 0.01, row["file"]
        assert detect_template(jpg) == detect_template(png) == row["template"]
        mad = float(np.abs(preprocess(jpg) - preprocess(png)).mean())
        mads.append(mad)
        # Measured 0.004 (no grid) to 0.015 (grid: JPEG dots vs averaged PNG grid); 0.03 = 8 gray levels.
        assert mad < 0.03, (row["file"], mad)
    assert len(mads) >= 8


@pytest.fixture(scope="module")
def all_dev_pages():
    """(file, labelled template, detected template, crop problem or None) for every dev PNG."""
    require(DEV_DIR)
    results = []
    for row in label_rows(DEV_DIR):
        gray = decode_image(DEV_DIR / row["file"])
        problem = _check_crop_against_text(gray, locate_trace_area(gray))
        results.append((row["file"], row["template"], detect_template(gray), problem))
    return results


@pytest.mark.slow
def test_detect_template_agrees_with_labels_on_all_dev_pages(all_dev_pages):
    assert len(all_dev_pages) >= 1000
    wrong = [(f, want, got) for f, want, got, _ in all_dev_pages if want != got]
    assert len(wrong) <= 0.01 * len(all_dev_pages), wrong[:20]


@pytest.mark.slow
def test_real_crops_exclude_header_and_footer_text_on_all_dev_pages(all_dev_pages):
    failures = [f"{f}: {p}" for f, _, _, p in all_dev_pages if p]
    assert not failures, "\n".join(failures[:20])
