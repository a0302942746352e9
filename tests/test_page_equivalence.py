"""The 1,190 development pages read the same as the recorded reference (benchmarks/page_equivalence.py):
the model input of every page within the stated gray-level tolerance of its 16 x 32 signature, and at
least 99 % of the bundled model's labels unchanged. A deliberate change of the page code records a
new reference (`python benchmarks/page_equivalence.py --write`) and says why in its commit."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_modules import load_benchmark
from realdata import DATA_DIR, DEV_DIR, require

equivalence = load_benchmark("page_equivalence")


def test_the_comparison_notices_a_changed_page_and_changed_labels():
    names = ["a.png", "b.png"]
    signatures = np.full((2, *equivalence.SIGNATURE_SHAPE), 200, np.uint8)
    reference = {"names": np.asarray(names), "signatures": signatures.copy(), "labels": np.asarray(["mi", "normal"])}
    assert equivalence.compare(reference, names, signatures, ["mi", "normal"])["ok"]
    moved = signatures.copy()
    moved[1, :4] = 100  # one page's crop moved: a quarter of its signature changed
    result = equivalence.compare(reference, names, moved, ["mi", "normal"])
    assert not result["ok"] and result["pages_beyond_tolerance"] == ["b.png"]
    assert not equivalence.compare(reference, names, signatures, ["mi", "mi"])["ok"]  # 50 % of labels changed
    with pytest.raises(ValueError, match="pages differ"):
        equivalence.compare(reference, ["a.png"], signatures[:1], ["mi"])


@pytest.mark.slow
def test_every_dev_page_reads_as_recorded():
    require(DEV_DIR)
    pytest.importorskip("onnxruntime")
    pages = equivalence.dev_pages(DATA_DIR)
    signatures, labels = equivalence.read_pages(pages)
    with np.load(equivalence.REFERENCE) as saved:
        result = equivalence.compare(dict(saved), [name for name, _ in pages], signatures, labels)
    assert result["ok"], {k: v for k, v in result.items() if k != "pages_beyond_tolerance"} | {
        "pages_beyond_tolerance": result["pages_beyond_tolerance"][:20]}
