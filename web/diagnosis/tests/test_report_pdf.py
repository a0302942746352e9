"""The PDF report holds what the result page shows: verdict, findings (and where they contradict the
model), measurements with flags, the ST table, the digitised leads, the explanation and the page as
the model saw it. Each test opens the PDF and reads its text (pypdf)."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from diagnosis import services
from diagnosis.models import Analysis, Digitization
from diagnosis.tests import helpers
from diagnosis.tests.test_digitization import inferior_stemi_png

pypdf = pytest.importorskip("pypdf")

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def stemi_png() -> bytes:
    return inferior_stemi_png()


@pytest.fixture
def client():
    client = Client()
    client.force_login(User.objects.create_user("carol", password="pw-carol-123"))
    return client


def _report(client, data: bytes) -> tuple[Analysis, str, pypdf.PdfReader]:
    response = client.post(reverse("diagnosis:upload"), {"image": helpers.upload(data)})
    assert response.status_code == 302
    analysis = Analysis.objects.latest("created_at")
    pdf = client.get(reverse("diagnosis:report", args=[analysis.pk]))
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    reader = pypdf.PdfReader(io.BytesIO(pdf.content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return analysis, " ".join(text.split()), reader


def test_report_holds_everything_the_page_shows(client, stemi_png):
    analysis, text, reader = _report(client, stemi_png)
    # Verdict, and the measurements' disagreement with it right under it.
    assert "Normal (70.0%)" in text
    assert "Decided from the picture" in text  # this (fake) model does not weigh the ST finding
    assert "THE MEASUREMENTS DISAGREE WITH THE MODEL" in text and "STEMI" in text
    assert text.index("DISAGREE") < text.index("Probabilities (balanced prior)")
    # Findings with their leads and values, the criteria, the clinician note.
    assert "Findings from the measurements" in text and "ST elevation in the inferior leads" in text
    assert "reciprocal ST depression in aVL" in text and "Criterion: ST elevation in two contiguous leads" in text
    assert "a clinician must read the ECG and confirm them" in text
    # Measurements with flags, the measurement source named by the strip's printed lead.
    assert "Measurements (rate and intervals from: II rhythm strip)" in text
    assert "Quantity Value Flag Note" in text and "Heart rate" in text and "QTc (Bazett)" in text
    assert "Rhythm strip: lead II (as printed)" in text
    # The ST table with every lead's value as stored.
    digitization = Digitization.objects.get(analysis=analysis)
    assert "ST level (J + 20 ms, mV)" in text
    for row in digitization.st_rows():
        if row["value"] is not None:
            assert f"{row['lead']} {row['value']:+.2f}" in text, row["lead"]
    # The digitised leads, drawn as vector lines (one polyline segment per thinned sample).
    assert "Digitised leads (3x4_grid)" in text
    content = b"".join(page.get_contents().get_data() for page in reader.pages)
    assert content.count(b" l\n") + content.count(b" l ") > 2000
    # The explanation and the page as the model saw it.
    assert "Importance of leads" in text and "Heatmap over the trace area" in text
    assert "What the model saw (preprocessed input)" in text
    assert "Research tool, not a medical device" in text


def test_report_without_contradiction(client):
    analysis, text, _ = _report(client, helpers.example_bytes())
    found = services.digitization_findings(digitization=Digitization.objects.get(analysis=analysis),
                                           label=analysis.label)
    assert "Findings from the measurements" in text
    assert ("DISAGREE" in text) == bool(found and found["contradictions"])
    for finding in (found or {}).get("findings", []):
        assert " ".join(finding["title"].split()) in text


def test_report_of_a_picture_that_cannot_be_digitised(client):
    import numpy as np

    noise = np.random.default_rng(3).integers(0, 255, (400, 560), dtype=np.uint8)
    _, text, _ = _report(client, helpers.png_bytes(noise))
    assert "No findings: the leads could not be read from this picture" in text
    assert "Digitised leads" not in text and "Normal (70.0%)" in text
