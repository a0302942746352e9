"""End to end in a real browser: sign in, upload the example ECG, read the result, download the PDF.

Drives Debian's Chromium (apt-get install chromium) through Playwright against pytest-django's live
server. Screenshots and the PDF are saved in web/artifacts/ (ignored by git) for people to look at.
Skips, saying why, only when Chromium or the playwright package is not installed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User

from diagnosis.models import Analysis
from diagnosis.tests import helpers

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def browser_page(monkeypatch):
    if CHROMIUM is None:
        reason = "Chromium is not installed (apt-get install chromium chromium-driver); browser test skipped"
        print(reason)
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (web-test extra) is missing")
    # Playwright's sync API runs an event loop in this thread; the ORM calls below are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        external: list[str] = []

        def offline(route):  # the app must work with no network: record and refuse anything not local
            host = urlsplit(route.request.url).hostname
            if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
                route.continue_()
            else:
                external.append(route.request.url)
                route.abort()

        context.route("**/*", offline)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.external_requests = external
        yield page
        context.close()
        browser.close()


@pytest.fixture
def predictor_for_browser(request):
    """The real ONNX path when the onnx package can build the tiny model, else the fake."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return "fake"
    request.getfixturevalue("real_predictor")
    return "onnx"


@pytest.mark.django_db(transaction=True)
def test_sign_in_upload_see_result_and_download_report(live_server, browser_page, predictor_for_browser):
    ARTIFACTS.mkdir(exist_ok=True)
    User.objects.create_user("clinician", password="a-long-pass-1234")
    page = browser_page

    page.goto(live_server.url + "/")
    assert "/accounts/login/" in page.url  # the upload page needs a sign-in (demo off)
    page.screenshot(path=str(ARTIFACTS / "e2e-login.png"))
    page.get_by_label("User name").fill("clinician")
    page.get_by_label("Password").fill("a-long-pass-1234")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live_server.url + "/")

    # A file over the limit, dropped onto the drop zone: its size is shown and the upload is blocked.
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(21 * 1000 * 1000)], "huge.png", {type: "image/png"}));
        document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""")
    assert "larger than the limit" in page.locator("#file-info").inner_text()
    page.screenshot(path=str(ARTIFACTS / "e2e-upload-too-big.png"))

    # Not a picture: the server says so above the form (and stores nothing).
    page.get_by_label("Choose a picture or drag it here").set_input_files(
        files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"these are my notes, not a picture"}])
    page.get_by_role("button", name="Analyse").click()
    alert = page.get_by_role("alert")
    assert "not a JPEG or PNG picture" in alert.inner_text()
    page.screenshot(path=str(ARTIFACTS / "e2e-upload-error.png"))

    page.get_by_label("Choose a picture or drag it here").set_input_files(str(helpers.EXAMPLE_ECG))
    info = page.locator("#file-info").inner_text()
    assert "Normal_100.png" in info and "136.2 kB" in info  # size shown before the upload
    page.get_by_role("button", name="Analyse").click()
    page.wait_for_url(re.compile(r".*/analyses/[0-9a-f-]{36}/$"))

    label = page.locator("#predicted-label").inner_text()
    assert label in {"Normal", "Myocardial Infarction", "Abnormal Heartbeat", "History of MI"}
    assert page.locator("#probabilities li").count() == 4
    assert page.get_by_role("progressbar").count() >= 4
    assert "Passed" in page.locator("#gate-verdict").inner_text()
    assert "not a medical device" in page.locator(".disclaimer").inner_text()
    assert page.locator("#model-version").inner_text().strip()
    assert page.locator("#lead-importance li").count() >= 12
    for picture in ("#heatmap", "#model-input"):
        assert page.eval_on_selector(picture, "img => img.complete && img.naturalWidth > 0"), picture
    page.screenshot(path=str(ARTIFACTS / "e2e-result.png"), full_page=True)

    with page.expect_download() as download_info:
        page.locator("#report-link").click()
    pdf = ARTIFACTS / "e2e-report.pdf"
    download_info.value.save_as(str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5_000

    page.get_by_role("link", name="History").click()
    assert page.locator("#history-table tbody tr").count() == 1
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto(page.url)
    page.screenshot(path=str(ARTIFACTS / "e2e-history-phone.png"), full_page=True)
    assert Analysis.objects.count() == 1

    # The interactive API docs come from local static files (drf-spectacular-sidecar), not a CDN.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(live_server.url + "/api/v1/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "ecgdx API" in page.locator(".swagger-ui .info .title").inner_text()
    page.wait_for_selector(".opblock-summary-path")
    page.screenshot(path=str(ARTIFACTS / "e2e-api-docs.png"))
    assert page.external_requests == [], page.external_requests
    print(f"browser test ({predictor_for_browser} predictor): screenshots and PDF in {ARTIFACTS}")


def _four_pages() -> dict[str, bytes]:
    """A normal scan, an inferior-STEMI-like page, a photo-like page and an upside-down page."""
    import cv2

    from diagnosis.tests.test_digitization import inferior_stemi_png
    from diagnosis.tests.test_real_model import _photo_of

    mi = cv2.imread(str(helpers.REPO / "examples" / "mi" / "MI_35.png"), cv2.IMREAD_GRAYSCALE)
    return {"normal": helpers.EXAMPLE_ECG.read_bytes(), "inferior_stemi": inferior_stemi_png(),
            "photo": helpers.png_bytes(_photo_of(mi)), "upside_down": helpers.png_bytes(cv2.rotate(mi, cv2.ROTATE_180))}


@pytest.mark.django_db(transaction=True)
def test_result_pages_of_four_kinds_of_picture(live_server, browser_page, settings):
    """Each picture uploaded in the browser with the bundled model: the page shows the stored verdict, its
    findings (and, for the STEMI-like page, the criteria met and any contradiction of the model), and
    an explanation of the verdict shown with the verdict's own probability. Screenshots in web/artifacts/."""
    from diagnosis import inference_adapter, services
    from diagnosis.models import Digitization
    from ecgdx.labels import DISPLAY_NAMES

    settings.ECGDX_PREDICTOR_FACTORY = "diagnosis.inference_adapter.onnx_predictor"
    settings.ECGDX_MODEL_PATH = None  # the bundled model
    inference_adapter.reset_predictor()
    ARTIFACTS.mkdir(exist_ok=True)
    User.objects.create_user("reader", password="a-long-pass-1234")
    page = browser_page
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("User name").fill("reader")
    page.get_by_label("Password").fill("a-long-pass-1234")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live_server.url + "/")
    try:
        for kind, data in _four_pages().items():
            page.goto(live_server.url + "/")
            page.get_by_label("Choose a picture or drag it here").set_input_files(
                files=[{"name": f"{kind}.png", "mimeType": "image/png", "buffer": data}])
            page.get_by_role("button", name="Analyse").click()
            page.wait_for_url(re.compile(r".*/analyses/[0-9a-f-]{36}/$"))
            page.wait_for_selector("#predicted-label", timeout=120_000)
            analysis = Analysis.objects.get(pk=page.url.rstrip("/").rsplit("/", 1)[-1])
            page.screenshot(path=str(ARTIFACTS / f"e2e-result-{kind}.png"), full_page=True)
            assert analysis.status == "done", (kind, analysis.failure_reason)
            # The verdict as stored, with its probability.
            assert page.locator("#predicted-label").inner_text() == DISPLAY_NAMES[analysis.label], kind
            assert page.locator("#predicted-percent").inner_text() == f"{round(100 * analysis.probability)}%"
            # The explanation is of that verdict, made on the verdict's own model input.
            assert page.locator("#explained-class").inner_text() == DISPLAY_NAMES[analysis.label], kind
            assert analysis.explanation_probability == pytest.approx(analysis.probability, abs=1e-6), kind
            assert page.locator("#explained-percent").inner_text() == page.locator("#predicted-percent").inner_text()
            assert page.locator("#lead-importance li").count() >= 12
            # The findings on the page are the stored measurements' findings.
            found = services.digitization_findings(digitization=Digitization.objects.get(analysis=analysis),
                                                   label=analysis.label)
            if found is None:
                assert page.locator("#digitization-error").count() == 1, kind
            else:
                shown = page.locator("#finding-list li").all_inner_texts() if found["findings"] else []
                assert len(shown) == len(found["findings"]), (kind, shown)
                for finding, text in zip(found["findings"], shown, strict=True):
                    assert " ".join(finding["title"].split()) in " ".join(text.split()), (kind, text)
                assert (page.locator("#findings-contradiction").count() == 1) == bool(found["contradictions"])
            if kind == "inferior_stemi":
                assert found and found["stemi_criteria_met"], found
                assert page.locator("#finding-list li.urgent").count() >= 1
                if analysis.label == "normal":  # the model misses it: the page must not reassure
                    assert "disagree" in page.locator("#findings-contradiction").inner_text().lower()
            if kind in ("photo", "upside_down"):
                assert "Straightened before reading" in page.locator("#normalization").inner_text(), kind
            if kind == "upside_down":
                assert "upside down" in page.locator("#normalization").inner_text()
    finally:
        inference_adapter.reset_predictor()
    assert page.external_requests == [], page.external_requests
