"""PDF report of one analysis, built only from what the server stored (fpdf2, core fonts).

Nothing in the report comes from the request: the view passes the Analysis it looked up for the
signed-in owner, and the pictures are read from private storage.
"""

from __future__ import annotations

import io

from django.utils import timezone
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from diagnosis.models import Analysis

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
        ("Processing time", f"{analysis.processing_ms:.0f} ms"),
        ("Quality gate", f"{'passed' if analysis.gate_ok else 'refused'} (score {analysis.gate_score:.2f})"),
        ("Upload SHA-256", analysis.upload_sha256),
    ])
    if analysis.gate_reasons:
        _paragraph(pdf, width, "Quality notes: " + "; ".join(analysis.gate_reasons))

    _heading(pdf, "Calibrated probabilities")
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
