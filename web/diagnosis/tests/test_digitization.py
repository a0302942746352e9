"""Digitised leads on the result page, signal downloads and API fields: made on first view, private."""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from diagnosis import services
from diagnosis.api_tokens import api_token_create
from diagnosis.models import Analysis, Digitization
from diagnosis.tests import helpers
from ecgdx.labels import LEADS

pytestmark = pytest.mark.django_db

API = "/api/v1"
HEADER = ["time", *LEADS]


@pytest.fixture(scope="module")
def page_png() -> bytes:
    """A rendered 3x4 page of a smooth synthetic record at 72 bpm (ecgdx.signals.render: truth known)."""
    from ecgdx.signals.render import printer_filter, render_page

    t = np.arange(5000) / 500.0
    beats = np.arange(0.4, 10.0, 60 / 72)
    lead = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) - 0.3 * np.exp(-0.5 * ((t - b - 0.03) / 0.01) ** 2)
               + 0.25 * np.exp(-0.5 * ((t - b - 0.28) / 0.05) ** 2) for b in beats)
    signals = printer_filter(np.vstack([lead * (0.5 + 0.1 * i) for i in range(12)]), 500.0)
    return helpers.png_bytes(render_page(signals, 500.0, layout="3x4", dpi=150, seed=2).image)


def inferior_stemi_png() -> bytes:
    """A rendered 3x4 page (72 bpm) with ST elevation in II, III, aVF and reciprocal depression in aVL:
    the issue's "Normal 70 %" page, which the fake model calls Normal 70 %."""
    from ecgdx.signals.render import printer_filter, render_page

    t = np.arange(5000) / 500.0
    st = {"II": 0.25, "III": 0.3, "aVF": 0.28, "aVL": -0.2}
    signals = np.zeros((12, len(t)))
    for i, lead in enumerate(LEADS):
        for b in np.arange(0.4, 10.0, 60 / 72):
            signals[i] += 0.12 * np.exp(-0.5 * ((t - b + 0.16) / 0.025) ** 2) + np.exp(-0.5 * ((t - b) / 0.012) ** 2)
            signals[i] += 0.25 * np.exp(-0.5 * ((t - b - 0.28) / 0.05) ** 2) - 0.2 * np.exp(-0.5 * ((t - b - 0.03) / 0.01) ** 2)
            # The ST segment and T wave shifted from 45 ms after the R to 330 ms (smooth edges).
            shift = 0.25 * (1 + np.tanh((t - b - 0.045) / 0.008)) * (1 + np.tanh(-(t - b - 0.33) / 0.04))
            signals[i] += st.get(lead, 0.0) * shift
    return helpers.png_bytes(render_page(printer_filter(signals, 500.0), 500.0, layout="3x4", dpi=150, seed=2).image)


@pytest.fixture(scope="module")
def stemi_png() -> bytes:
    return inferior_stemi_png()


@pytest.fixture
def alice():
    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob():
    return User.objects.create_user("bob", password="pw-bob-123")


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _analysis(client, data) -> Analysis:
    response = client.post(reverse("diagnosis:upload"), {"image": helpers.upload(data)})
    assert response.status_code == 302, response.content[:500]
    return Analysis.objects.latest("created_at")


def test_result_page_shows_replot_measurements_and_downloads(alice, page_png):
    client = _login(alice)
    analysis = _analysis(client, page_png)
    assert Digitization.objects.filter(analysis=analysis).count() == 1  # made by the analysis task
    html = client.get(reverse("diagnosis:result", args=[analysis.pk])).content.decode()
    row = Digitization.objects.get(analysis=analysis)
    assert row.ok and row.template == "3x4_grid" and row.has_rhythm
    assert 'id="digitized"' in html and "<svg" in html and 'class="ecg-replot"' in html
    assert html.count("<polyline") >= 13
    assert 'id="measure-heart_rate_bpm"' in html and row.measurements["heart_rate_bpm"] == pytest.approx(72, abs=3)
    assert f"{row.measurements['heart_rate_bpm']:.0f} bpm" in html
    for fmt in ("leads.csv", "rhythm.csv", "wfdb.zip"):
        assert reverse("diagnosis:signals", args=[analysis.pk, fmt]) in html
    assert reverse("diagnosis:image", args=[analysis.pk, "original"]) in html
    client.get(reverse("diagnosis:result", args=[analysis.pk]))
    assert Digitization.objects.get(analysis=analysis).created_at == row.created_at  # stored, not redone


def test_findings_contradicting_the_model_are_shown_prominently(alice, stemi_png):
    client = _login(alice)
    analysis = _analysis(client, stemi_png)
    assert analysis.label == "normal"  # the fake model: Normal 70 %
    html = client.get(reverse("diagnosis:result", args=[analysis.pk])).content.decode()
    assert 'id="findings-contradiction"' in html and 'role="alert"' in html
    assert "STEMI" in html and "but the model says Normal" in html
    head = html[html.index('id="predicted-label"') - 80 : html.index('id="predicted-label"')]
    assert "contradicted" in head  # the verdict loses its reassuring green
    assert html.index('id="findings-contradiction"') < html.index('id="prob-heading"')  # above the fold
    assert 'id="finding-st_elevation-inferior"' in html and "ST elevation in the inferior leads" in html
    assert "reciprocal ST depression in aVL" in html and 'href="#st-levels"' in html
    assert 'id="findings-note"' in html and "a clinician must read the ECG" in html
    assert "lead II rhythm strip" in html  # the measurement source, by the strip's printed lead
    row = Digitization.objects.get(analysis=analysis)
    assert row.summary["rhythm_lead"] == "II" and row.measurements["rhythm_source"] == "II rhythm strip"
    assert set(row.measurements["q_waves"]) == set(LEADS)


def test_findings_without_contradiction(alice, page_png):
    client = _login(alice)
    analysis = _analysis(client, page_png)
    html = client.get(reverse("diagnosis:result", args=[analysis.pk])).content.decode()
    found = services.digitization_findings(digitization=Digitization.objects.get(analysis=analysis), label="normal")
    assert 'id="findings"' in html and 'id="findings-note"' in html
    assert not found["stemi_criteria_met"] and "STEMI" not in html
    assert ('id="findings-contradiction"' in html) == bool(found["contradictions"])
    for finding in found["findings"]:
        assert finding["title"] in html


def test_api_returns_findings(alice, stemi_png):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=alice, replace_existing=False).token}")
    created = api.post(f"{API}/predictions", {"image": helpers.upload(stemi_png)}, format="multipart")
    d = api.get(created.json()["url"]).json()["digitization"]
    assert d["rhythm_lead"] == "II"
    findings = d["findings"]
    assert findings["stemi_criteria_met"] and "STEMI" in findings["contradictions"][0]
    stemi = next(f for f in findings["findings"] if f["key"] == "st_elevation")
    assert stemi["territory"] == "inferior" and stemi["severity"] == "urgent"
    assert {"II", "III", "aVF", "aVL"} <= set(stemi["leads"]) and stemi["values"]["III"] == pytest.approx(0.3, abs=0.06)
    assert "clinician" in findings["note"]


def test_signal_downloads(alice, page_png):
    client = _login(alice)
    analysis = _analysis(client, page_png)
    response = client.get(reverse("diagnosis:signals", args=[analysis.pk, "leads.csv"]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"] and "no-store" in response["Cache-Control"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == HEADER and len(rows) == 5001
    aVR = [r[HEADER.index("aVR")] for r in rows[1:]]
    assert aVR[0] == "" and aVR[1300] != "" and aVR[2600] == ""  # printed 2.5-5 s only
    strip = client.get(reverse("diagnosis:signals", args=[analysis.pk, "rhythm.csv"]))
    assert strip.content.decode().splitlines()[0] == "time,II"
    lead = Digitization.objects.get(analysis=analysis).summary.get("rhythm_lead")
    assert strip["Content-Disposition"].endswith(f'-rhythm_{lead}.csv"' if lead else '-rhythm.csv"')
    old_link = client.get(reverse("diagnosis:signals", args=[analysis.pk, "rhythm_II.csv"]))
    assert old_link.status_code == 200 and old_link.content == strip.content
    archive = zipfile.ZipFile(io.BytesIO(client.get(reverse("diagnosis:signals", args=[analysis.pk, "wfdb.zip"])).content))
    names = set(archive.namelist())
    assert any(n.endswith(".hea") for n in names) and any(n.endswith("_rhythm.dat") for n in names)
    header = archive.read(next(n for n in names if n.endswith(".hea") and "rhythm" not in n)).decode()
    assert header.split()[1:4] == ["12", "500", "5000"]
    assert client.get(reverse("diagnosis:signals", args=[analysis.pk, "signals.xlsx"])).status_code == 404


def test_signals_are_private(alice, bob, page_png):
    analysis = _analysis(_login(alice), page_png)
    url = reverse("diagnosis:signals", args=[analysis.pk, "leads.csv"])
    assert _login(bob).get(url).status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    api = APIClient()
    api_url = f"{API}/predictions/{analysis.pk}/signals/leads.csv"
    assert api.get(api_url).status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=bob, replace_existing=False).token}")
    assert api.get(api_url).status_code == 404
    assert Digitization.objects.count() == 1  # refused requests make nothing


def test_api_detail_returns_digitization(alice, page_png):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=alice, replace_existing=False).token}")
    created = api.post(f"{API}/predictions", {"image": helpers.upload(page_png)}, format="multipart")
    assert created.status_code == 202 and created.json()["digitization"]["status"] == "ok"  # the task made it
    body = api.get(created.json()["url"]).json()
    d = body["digitization"]
    assert d["status"] == "ok" and d["template"] == "3x4_grid" and d["fs"] == 500.0 and d["has_rhythm"]
    assert d["measurements"]["heart_rate_bpm"] == pytest.approx(72, abs=3)
    assert set(d["measurements"]["st_mv"]) == set(LEADS)
    assert d["summary"]["windows"]["aVR"] == [2.5, 5.0]
    assert set(d["downloads"]) == {"leads_csv", "rhythm_csv", "wfdb_zip"}
    csv_response = api.get(d["downloads"]["leads_csv"])
    assert csv_response.status_code == 200 and csv_response.content.decode().splitlines()[0] == ",".join(HEADER)
    listed = api.get(f"{API}/predictions").json()["results"][0]
    assert listed["digitization"]["status"] == "ok"  # stored now, so lists show it too


def test_picture_that_cannot_be_digitised(alice):
    """The fake model accepts any picture with contrast; the digitiser finds no lead layout in noise."""
    noise = np.random.default_rng(3).integers(0, 255, (400, 560), dtype=np.uint8)
    client = _login(alice)
    analysis = _analysis(client, helpers.png_bytes(noise))
    response = client.get(reverse("diagnosis:result", args=[analysis.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="digitization-error"' in html and "could not be read" in html
    row = Digitization.objects.get(analysis=analysis)
    assert row.status == "failed" and row.error
    assert client.get(reverse("diagnosis:signals", args=[analysis.pk, "leads.csv"])).status_code == 404


def test_after_the_retention_purge(alice, page_png):
    client = _login(alice)
    kept = _analysis(client, page_png)  # digitised by its task while the picture existed
    late = _analysis(client, page_png)
    # A result stored by a version that digitised on first view, never viewed before the purge.
    Digitization.objects.filter(analysis=late).delete()
    assert services.images_purge(older_than_days=1, now=late.created_at + __import__("datetime").timedelta(days=2)) == 2
    html = client.get(reverse("diagnosis:result", args=[late.pk])).content.decode()
    assert "deleted before its leads were digitised" in html
    assert client.get(reverse("diagnosis:signals", args=[late.pk, "leads.csv"])).status_code == 404
    assert client.get(reverse("diagnosis:signals", args=[kept.pk, "leads.csv"])).status_code == 200


def test_deleting_an_analysis_deletes_its_signals(alice, page_png):
    client = _login(alice)
    analysis = _analysis(client, page_png)
    client.get(reverse("diagnosis:result", args=[analysis.pk]))
    assert Digitization.objects.count() == 1
    client.post(reverse("diagnosis:delete", args=[analysis.pk]))
    assert not Digitization.objects.exists()


def test_anonymous_demo_shows_the_replot(settings, page_png, _private_media):
    settings.ECGDX_ANONYMOUS_DEMO = True
    response = Client().post(reverse("diagnosis:upload"), {"image": helpers.upload(page_png)})
    html = response.content.decode()
    assert response.status_code == 200 and 'class="ecg-replot"' in html and 'id="measurements"' in html
    assert "signal-downloads" not in html  # nothing stored, nothing to download
    assert not Digitization.objects.exists() and not helpers.files_under(_private_media)


def test_stored_samples_round_trip():
    row = Digitization(status="ok")
    signals = np.full((12, 100), np.nan)
    signals[3, 10:60] = np.linspace(-2, 2, 50)
    row.set_arrays(signals, np.sin(np.arange(100) / 10.0))
    back, rhythm = row.arrays()
    assert np.allclose(back, signals, atol=5e-4, equal_nan=True)
    assert np.allclose(rhythm, np.sin(np.arange(100) / 10.0), atol=5e-4)
    row.set_arrays(signals, None)
    assert row.arrays()[1] is None and not row.has_rhythm
