"""Large uploads are analysed at working scale: JPEGs decoded reduced by libjpeg, others shrunk."""


import cv2
import numpy as np
import pytest
from realdata import DATA_DIR
from synthetic import make_page

from ecgdx.page.preprocessing import PreprocessSpec, load_page, preprocess, preprocess_with_details

DATA = DATA_DIR


def _page(width):
    image = make_page("3x4_grid", width=width, height=int(width * 786 / 1106), seed=3)
    return image[0] if isinstance(image, tuple) else image


def test_small_pages_are_used_as_they_are():
    gray = _page(1106)
    page = load_page(gray)
    assert page.scale == 1 and page.gray is gray and page.original_size == gray.shape


def test_a_full_resolution_jpeg_is_decoded_at_half_size():
    gray = _page(2212)
    data = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    page = load_page(data)
    assert page.scale == 2
    assert page.original_size == gray.shape
    assert page.gray.shape == (gray.shape[0] // 2, gray.shape[1] // 2)


def test_reduced_decode_gives_nearly_the_same_model_input_as_a_full_decode():
    gray = _page(2212)
    data = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    spec = PreprocessSpec(height=256, width=512)
    reduced, details = preprocess_with_details(data, spec)
    full = preprocess(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE), spec)
    assert np.abs(reduced - full).mean() < 0.02
    # crop boxes are reported in original pixels whatever the working scale
    _, full_details = preprocess_with_details(cv2.imdecode(np.frombuffer(data, np.uint8), 0), spec)
    assert np.abs(np.subtract(details.crop_box, full_details.crop_box)).max() <= 0.01 * gray.shape[1]


@pytest.mark.skipif(not (DATA / "mendeley-v1-fullres-samples").is_dir(), reason="real data not present")
def test_real_full_resolution_jpeg_matches_its_png_twin_in_canonical_layout():
    import csv

    root = DATA / "mendeley-v1-fullres-samples"
    spec = PreprocessSpec(height=256, width=512, layout="canonical")
    diffs = []
    with open(root / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            jpeg = preprocess(root / row["file"], spec)
            png = preprocess(DATA / row["same_ecg_as"], spec)
            diffs.append(float(np.abs(jpeg - png).mean()))
    assert len(diffs) == 11
    assert max(diffs) < 0.03, diffs
