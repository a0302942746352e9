"""PDF report of one analysis, built only from what the server stored (fpdf2, core fonts).

Nothing in the report comes from the request: the view passes the Analysis it looked up for the
signed-in owner, and the pictures are read from private storage.

Contents, in order: the verdict (and, prominently, where the measurements contradict it), the
criteria-based findings, the measurements with their plausibility flags, the ST table, the
digitised leads redrawn (vector lines), the probabilities, the explanation, and the page as the
model saw it. The digitisation is made on first use, as on the result page.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from django.utils import timezone
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from diagnosis import services
from diagnosis.models import Analysis
from diagnosis.signal_plot import plot_rows, rhythm_label, thin_samples
from ecgdx.labels import LEADS

logger = logging.getLogger(__name__)

DISCLAIMER = (
    "Research tool, not a medical device. This result was produced by a machine-learning model from a "
    "picture of an ECG printout. It has not been validated for clinical use and must not be used to "
    "diagnose, treat or triage any patient."
)
_INK = (20, 24, 31)
_MUTED = (90, 98, 110)
_BAR = (37, 99, 235)
_BAR_PREDICTED = (185, 28, 28)
_TRACK = (226, 232, 240)
_DANGER = (185, 28, 28)
_DANGER_BG = (254, 226, 226)
_WARN_BG = (255, 251, 235)
_GRID = (241, 198, 207)


def _latin1(text: str) -> str:
    """Core PDF fonts cover Latin-1 only; anything else becomes '?' rather than an error."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


class _Report(FPDF):
    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("Helvetica", "", 7)
        self.set_text_color(*_MUTED)
        self.cell(0, 4, _latin1("ecgdx - research tool, not a medical device"), align="L")
        self.cell(0, 4, f"page {self.page_no()}", align="R")


def build_report(analysis: Analysis) -> bytes:
    pdf = _Report(format="A4", unit="mm")
    pdf.set_auto_page_break(True, margin=18)
    pdf.set_title(f"ecgdx analysis {analysis.pk}")
    pdf.set_author("ecgdx")
    pdf.set_creator("ecgdx web")
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    pdf.set_font("Helvetica", "B", 16)
    pdf.set_text_color(*_INK)
    pdf.cell(0, 9, "ECG picture analysis", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _disclaimer(pdf, width)

    local = timezone.localtime(analysis.created_at)
    _heading(pdf, "Result")
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(0, 7, _latin1(f"{analysis.display_name}  ({100 * analysis.probability:.1f}%)"),
             new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _rows(pdf, [
        ("Analysis", str(analysis.pk)),
        ("Date", f"{local:%Y-%m-%d %H:%M} {local.tzname() or ''}".strip()),
        ("User", analysis.owner.get_username()),
        ("Model version", analysis.model_version),
        ("Decided from", analysis.decided_from),
        *([("Picture alone", f"{picture['name']} ({picture['percent']:.1f}%)"
            + ("" if picture["same"] else "; the measured ST segments changed the answer"))]
          if (picture := analysis.picture_verdict) else []),
        ("Processing time", f"{analysis.processing_ms:.0f} ms"),
        ("Quality gate", f"{'passed' if analysis.gate_ok else 'refused'} (score {analysis.gate_score:.2f})"),
        ("Upload SHA-256", analysis.upload_sha256),
    ])
    if analysis.gate_reasons:
        _paragraph(pdf, width, "Quality notes: " + "; ".join(analysis.gate_reasons))

    digitization = _digitization(analysis)
    findings = services.digitization_findings(digitization=digitization, label=analysis.label)
    if findings and findings["contradictions"]:
        _contradiction(pdf, width, findings)
    _findings(pdf, width, digitization, findings)
    if digitization is not None and digitization.ok:
        _measurements(pdf, width, digitization)
        _st_table(pdf, width, digitization)
        _leads_plot(pdf, width, digitization)

    _heading(pdf, "Probabilities (balanced prior)")
    for row in analysis.probability_rows():
        _bar(pdf, row["name"], row["value"], 1.0, f"{row['percent']:.1f}%", predicted=row["predicted"])

    leads = analysis.lead_rows()
    if leads:
        kind = "grid cells" if analysis.explanation_method == "grid" else "leads"
        _heading(pdf, f"Importance of {kind} (occlusion: drop of P({analysis.display_name}))")
        peak = max([r["importance"] for r in leads] + [1e-9])
        for row in leads[:13]:
            _bar(pdf, row["name"], max(row["importance"], 0.0), peak, f"{round(row['points'], 1) + 0.0:+.1f} pp")
        _paragraph(pdf, width, "Occlusion sensitivity shows where the model looked, not clinical causation."
                   + (f" {analysis.explanation_note[:1].upper()}{analysis.explanation_note[1:]}."
                      if analysis.explanation_note else ""))

    pictures = [("Heatmap over the trace area", analysis.heatmap_image, width),
                ("What the model saw (preprocessed input)", analysis.model_input_image, min(width, 90.0))]
    for title, field_file, picture_width in pictures:
        content = _read(field_file)
        if content is None:
            continue
        _picture(pdf, title, content, picture_width)
    if analysis.images_deleted_at:
        _paragraph(pdf, width, f"The pictures of this analysis were deleted on "
                   f"{timezone.localtime(analysis.images_deleted_at):%Y-%m-%d} (retention policy).")
    return bytes(pdf.output())


def _digitization(analysis: Analysis):
    """The analysis's Digitization (made now if the result page was never viewed), or None."""
    try:
        return services.digitization_get_or_create(analysis=analysis)
    except Exception:  # noqa: BLE001 - a report without the leads beats no report
        logger.exception("analysis %s: digitisation for the report failed", analysis.pk)
        return None


def _contradiction(pdf: FPDF, width: float, findings: dict) -> None:
    """The measurements' disagreement with the model, in a red box right under the verdict."""
    pdf.ln(2)
    pdf.set_fill_color(*_DANGER_BG)
    pdf.set_draw_color(*_DANGER)
    pdf.set_line_width(0.6)
    pdf.set_text_color(127, 29, 29)
    pdf.set_font("Helvetica", "B", 10)
    text = "THE MEASUREMENTS DISAGREE WITH THE MODEL. " + " ".join(findings["contradictions"])
    pdf.multi_cell(width, 5, _latin1(text), border=1, fill=True, padding=2, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_line_width(0.2)
    pdf.set_text_color(*_INK)


def _findings(pdf: FPDF, width: float, digitization, findings: dict | None) -> None:
    _heading(pdf, "Findings from the measurements")
    if findings is None:
        reason = (f"the leads could not be read from this picture: {digitization.error}" if digitization is not None
                  else "the picture was deleted before its leads were digitised")
        _paragraph(pdf, width, f"No findings: {reason}")
        return
    if not findings["findings"]:
        _paragraph(pdf, width, "None of the criteria below is met by the measurements.")
    for finding in findings["findings"]:
        urgent = finding["severity"] == "urgent"
        pdf.set_fill_color(*(_DANGER_BG if urgent else _WARN_BG))
        pdf.set_text_color(*(_DANGER if urgent else _INK))
        pdf.set_font("Helvetica", "B", 9)
        line = finding["title"] + (f": {finding['values_text']}" if finding["values_text"] else "")
        pdf.multi_cell(width, 5, _latin1(line), fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(*_INK)
        detail = f"Criterion: {finding['criterion']}."
        if finding.get("uncertain"):
            detail += f" Uncertain measurement: {finding['uncertain']}."
        _paragraph(pdf, width, detail)
    for title, lines in (("Checked and not met", findings["checked"]), ("Could not be checked", findings["not_assessed"])):
        if lines:
            _paragraph(pdf, width, f"{title}: " + " ".join(line if line.endswith(".") else line + "." for line in lines))
    pdf.set_font("Helvetica", "B", 8)
    pdf.multi_cell(width, 4, _latin1(findings["note"]), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _measurements(pdf: FPDF, width: float, digitization) -> None:
    """Measurements with their plausibility flags (``ecgdx.signals.measure``; older results have none)."""
    values = digitization.measurements or {}
    flags, flag_reasons = values.get("flags") or {}, values.get("flag_reasons") or {}
    summary = digitization.summary or {}
    source = values.get("rhythm_source") or "not measured"
    _heading(pdf, f"Measurements (rate and intervals from: {source})")
    widths = (42, 28, 24, width - 94)
    _table_row(pdf, widths, ("Quantity", "Value", "Flag", "Note"), bold=True)
    for row in digitization.measurement_rows():
        value = "-" if row["value"] is None else f"{row['value']:.0f} {row['unit']}"
        flag = flags.get(row["key"]) or ("ok" if row["value"] is not None else "not measured")
        note = flag_reasons.get(row["key"]) or row["reason"]
        _table_row(pdf, widths, (row["label"], value, flag, note), alert=flag not in ("ok",))
    if summary.get("has_rhythm"):
        lead = summary.get("rhythm_lead")
        _paragraph(pdf, width, f"Rhythm strip: lead {lead} (as printed)." if lead else
                   "Rhythm strip: its printed lead label could not be read, so it is called 'rhythm strip'.")


def _st_table(pdf: FPDF, width: float, digitization) -> None:
    _heading(pdf, "ST level (J + 20 ms, mV) and digitisation confidence per lead")
    confidence = {row["lead"]: row["value"] for row in digitization.confidence_rows()}
    rows = digitization.st_rows()
    widths = (16, 22, 24) * 2
    _table_row(pdf, widths, ("Lead", "ST (mV)", "Confidence") * 2, bold=True)
    half = (len(rows) + 1) // 2
    for left, right in zip(rows[:half], rows[half:] + [None] * (2 * half - len(rows)), strict=True):
        cells: list[str] = []
        for row in (left, right):
            if row is None:
                cells += ["", "", ""]
                continue
            st = "-" if row["value"] is None else f"{row['value']:+.2f}"
            conf = confidence.get(row["lead"])
            cells += [row["lead"], st, "-" if conf is None else f"{conf:.2f}"]
        _table_row(pdf, widths, tuple(cells))


def _table_row(pdf: FPDF, widths, cells, bold: bool = False, alert: bool = False) -> None:
    pdf.set_font("Helvetica", "B" if bold else "", 8)
    pdf.set_text_color(*(_DANGER if alert else _INK))
    height = 4.5
    if pdf.get_y() + height > pdf.h - pdf.b_margin:
        pdf.add_page()
    y = pdf.get_y()
    x = pdf.l_margin
    lines = 1
    for w, text in zip(widths, cells, strict=True):
        pdf.set_xy(x, y)
        pdf.multi_cell(w, height, _latin1(text), border="B", new_x=XPos.RIGHT, new_y=YPos.TOP)
        lines = max(lines, len(pdf.multi_cell(w, height, _latin1(text), dry_run=True, output="LINES")))
        x += w
    pdf.set_xy(pdf.l_margin, y + lines * height)
    pdf.set_text_color(*_INK)


def _leads_plot(pdf: FPDF, width: float, digitization) -> None:
    """The digitised leads redrawn as vector lines in the printed arrangement, at 2/3 of paper
    scale (10 s across the page), on a 0.2 s x 0.5 mV grid; thinned like the web page's plot."""
    signals, rhythm = digitization.arrays()
    summary = digitization.summary or {}
    rows = plot_rows(digitization.template, rhythm is not None)
    label_w = 12.0
    mm_per_s = (width - label_w) / 10.0
    mm_per_mv = mm_per_s * 10.0 / 25.0  # the paper's 25 mm/s : 10 mm/mV aspect
    row_h = 3.0 * mm_per_mv
    height = row_h * len(rows)
    if pdf.get_y() + 12 + height > pdf.h - pdf.b_margin:
        pdf.add_page()
    _heading(pdf, f"Digitised leads ({digitization.template}), redrawn: 0.2 s x 0.5 mV grid")
    x0, y0 = pdf.l_margin + label_w, pdf.get_y() + 1
    pdf.set_draw_color(*_GRID)
    pdf.set_line_width(0.1)
    for k in range(51):
        pdf.line(x0 + k * 0.2 * mm_per_s, y0, x0 + k * 0.2 * mm_per_s, y0 + height)
    for k in range(int(height / (0.5 * mm_per_mv)) + 1):
        pdf.line(x0, y0 + k * 0.5 * mm_per_mv, x0 + 10 * mm_per_s, y0 + k * 0.5 * mm_per_mv)
    pdf.set_draw_color(*_INK)
    pdf.set_line_width(0.25)
    fs = digitization.fs
    t = np.arange(signals.shape[1]) / fs
    pdf.set_font("Helvetica", "", 7)
    for r, leads in enumerate(rows):
        base = y0 + r * row_h + row_h / 2
        for lead in leads:
            x = rhythm if lead == "rhythm" else signals[LEADS.index(lead)]
            name = rhythm_label(summary.get("rhythm_lead")) if lead == "rhythm" else lead
            ok = np.isfinite(x)
            edges = np.diff(np.concatenate(([0], ok.view(np.int8), [0])))
            for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
                xs, ys = thin_samples(t[start:end], x[start:end], max(1, int(round(fs / 125.0))))
                ys = np.clip(ys, -1.5, 1.5)  # a tall R stops at its row's edge instead of crossing the next
                pdf.polyline([(x0 + a * mm_per_s, base - b * mm_per_mv) for a, b in zip(xs, ys, strict=True)])
            first = np.flatnonzero(ok)
            if len(first):
                pdf.set_xy(x0 + t[first[0]] * mm_per_s + 0.5, base - 0.95 * row_h / 2)
                pdf.cell(20, 3, _latin1(name))
    pdf.set_line_width(0.2)
    pdf.set_xy(pdf.l_margin, y0 + height + 2)


def _disclaimer(pdf: FPDF, width: float) -> None:
    pdf.set_fill_color(254, 243, 199)
    pdf.set_draw_color(217, 119, 6)
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_text_color(120, 53, 15)
    pdf.multi_cell(width, 5, _latin1(DISCLAIMER), border=1, fill=True, padding=2,
                   new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(*_INK)


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 11)
    pdf.set_text_color(*_INK)
    pdf.cell(0, 7, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _rows(pdf: FPDF, rows: list[tuple[str, str]]) -> None:
    for key, value in rows:
        pdf.set_font("Helvetica", "", 9)
        pdf.set_text_color(*_MUTED)
        pdf.cell(38, 5, _latin1(key))
        pdf.set_text_color(*_INK)
        pdf.cell(0, 5, _latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _paragraph(pdf: FPDF, width: float, text: str) -> None:
    pdf.set_font("Helvetica", "", 8)
    pdf.set_text_color(*_MUTED)
    pdf.multi_cell(width, 4, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(*_INK)


def _bar(pdf: FPDF, name: str, value: float, scale: float, text: str, predicted: bool = False) -> None:
    label_w, bar_w, h = 48, 100, 5
    x, y = pdf.get_x(), pdf.get_y()
    pdf.set_font("Helvetica", "B" if predicted else "", 9)
    pdf.cell(label_w, h, _latin1(name))
    pdf.set_fill_color(*_TRACK)
    pdf.rect(x + label_w, y + 1, bar_w, h - 2, style="F")
    fraction = max(0.0, min(1.0, value / scale)) if scale > 0 else 0.0
    if fraction > 0:
        pdf.set_fill_color(*(_BAR_PREDICTED if predicted else _BAR))
        pdf.rect(x + label_w, y + 1, bar_w * fraction, h - 2, style="F")
    pdf.set_x(x + label_w + bar_w + 3)
    pdf.cell(0, h, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _picture(pdf: FPDF, title: str, content: bytes, width: float) -> None:
    """A heading and its picture, kept together on one page."""
    from PIL import Image

    with Image.open(io.BytesIO(content)) as im:
        w_px, h_px = im.size
    max_height = pdf.h - pdf.t_margin - pdf.b_margin - 20
    height = width * h_px / max(w_px, 1)
    if height > max_height:
        width, height = width * max_height / height, max_height
    if pdf.get_y() + 10 + height > pdf.h - pdf.b_margin:
        pdf.add_page()
    _heading(pdf, title)
    pdf.image(io.BytesIO(content), x=pdf.l_margin, w=width, h=height)
    pdf.ln(2)


def _read(field_file) -> bytes | None:
    if not field_file:
        return None
    try:
        with field_file.storage.open(field_file.name, "rb") as fh:
            return fh.read()
    except OSError:
        return None
