"""Criteria-based findings from ECG measurements, stated beside the model's answer.

``assess(measurements, q_waves=None) -> Findings`` checks the standard criteria a reader of an ECG
checks, on the numbers ``ecgdx.signals.measure`` (and ``measure_q_waves`` here) made from the digitised
signals. Each finding names its leads and values and the rule it met; the criteria that were checked
and not met, and those that could not be checked (a measurement is missing), are listed too, so a
page without findings is not mistaken for a normal ECG.

Criteria and their sources:

- ST elevation (STEMI criteria), Fourth Universal Definition of Myocardial Infarction (Thygesen K
  et al., Circulation 2018;138:e618-e651): new ST elevation in two contiguous leads of >= 0.1 mV in
  all leads but V2-V3, and in V2-V3 >= 0.2 mV (the definition's cut-point for men >= 40 years;
  0.25 mV for men < 40 and 0.15 mV for women; age and sex are not known here). Our ST level is
  measured at J + 20 ms (``ecgdx.signals.measure``), where the definition reads it at the J point:
  the detected J of a digitised trace still carries the QRS's last slope, and by J + 60 ms a normal
  upsloping ST segment has risen (the criteria were met on 16 % of the Normal development pages at
  J + 60 ms, on 5 % at J + 20 ms; ``docs/evaluation.md``, H7).
  Territories: inferior (II, III, aVF), anterior (V1-V4), lateral (I, aVL, V5, V6). Reciprocal ST
  depression (>= 0.05 mV) is reported in the opposite territory: inferior <-> I and aVL, anterior
  and lateral -> the inferior leads.
- ST depression >= 0.05 mV in two contiguous leads (same definition, ischaemia), when there is no
  ST elevation it would be reciprocal to.
- Pathological Q waves, the same definition's ECG signs of a prior infarction: a Q wave > 20 ms or
  a QS complex in V2-V3; a Q wave >= 30 ms and >= 0.1 mV deep or a QS complex in I, II, aVL, aVF or
  V4-V6; in two leads of one contiguous grouping (I and aVL; V1-V6; II, III and aVF). III, aVR and
  V1 never count on their own (their Q waves and QS complexes are common in normal hearts), and a
  Q shallower than 0.1 mV is not counted in V2-V3 either (our digitised traces carry ~0.02-0.05 mV
  of noise). The Q wave is the QRS's initial negative deflection, measured in each lead from the
  global QRS onset of ``ecgdx.signals.measure`` against the PR-segment level.
- Rate: the conventional adult resting limits, tachycardia > 100 bpm, bradycardia < 60 bpm.
- Irregular rhythm: RR intervals whose SDNN exceeds 10 % of the mean RR (our threshold: sinus
  arrhythmia of the young can exceed it; atrial fibrillation and ectopic beats do).
- Wide QRS: >= 120 ms (AHA/ACCF/HRS recommendations for the standardization and interpretation of
  the ECG, part III, intraventricular conduction disturbances; Surawicz B et al., Circulation
  2009;119:e235-e240).
- Long QTc (Bazett): > 480 ms, the limit for women, because sex is not known here; 471-480 ms is
  reported as long for a man (> 470 ms). Both limits from the AHA scientific statement on the
  prevention of torsade de pointes in hospital settings (Drew BJ et al., Circulation
  2010;121:1047-1060).

These are computer measurements of a picture, never a diagnosis: ``NOTE`` says so, and every page
and report that shows findings must show it. Torch-free; ``measure_q_waves`` needs numpy only,
``r_peaks`` neurokit2 (the [signal] extra).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ecgdx.labels import LEADS, display_name

__all__ = ["NOTE", "Finding", "Findings", "QWave", "assess", "measure_page", "measure_q_waves", "page_findings",
           "r_peaks", "st_elevation_of"]

NOTE = ("These findings are computer measurements of a picture of an ECG printout, checked against "
        "standard criteria. They are not a diagnosis: a clinician must read the ECG and confirm them.")

ST_ELEVATION_MV = 0.1
ST_ELEVATION_V2_V3_MV = 0.2
ST_DEPRESSION_MV = 0.05
Q_MIN_DEPTH_MV = 0.1
Q_WIDE_MS = 30.0
Q_WIDE_V2_V3_MS = 20.0
# The leads whose Q waves count, and the contiguous groupings two of them must share.
Q_LEADS = ("I", "II", "aVL", "aVF", "V2", "V3", "V4", "V5", "V6")
Q_GROUPINGS: tuple[tuple[str, ...], ...] = (
    ("I", "aVL"),
    ("V1", "V2", "V3", "V4", "V5", "V6"),
    ("II", "III", "aVF"),
)
TACHYCARDIA_BPM = 100.0
BRADYCARDIA_BPM = 60.0
IRREGULAR_RR_CV = 0.10
WIDE_QRS_MS = 120.0
LONG_QTC_MS = 480.0
LONG_QTC_MALE_MS = 470.0

TERRITORIES: dict[str, tuple[str, ...]] = {
    "inferior": ("II", "III", "aVF"),
    "anterior": ("V1", "V2", "V3", "V4"),
    "lateral": ("I", "aVL", "V5", "V6"),
}
# Leads next to each other in the heart's view: the inferior trio, the high lateral pair, the
# precordial neighbours.
CONTIGUOUS: tuple[tuple[str, str], ...] = (
    ("II", "III"), ("II", "aVF"), ("III", "aVF"),
    ("I", "aVL"),
    ("V1", "V2"), ("V2", "V3"), ("V3", "V4"), ("V4", "V5"), ("V5", "V6"),
)
RECIPROCAL: dict[str, tuple[str, ...]] = {
    "inferior": ("I", "aVL"),
    "anterior": ("II", "III", "aVF"),
    "lateral": ("II", "III", "aVF"),
}
# Severity: 'urgent' findings (STEMI criteria) must never be shown as reassuring; 'abnormal' the rest.
URGENT, ABNORMAL = "urgent", "abnormal"


@dataclass(frozen=True)
class Finding:
    """One criterion met. key: 'st_elevation', 'st_depression', 'pathological_q', 'tachycardia',
    'bradycardia', 'irregular_rhythm', 'wide_qrs', 'long_qtc'. title: one line for people. leads:
    the leads that meet it (empty for whole-ECG quantities). values: lead or quantity -> the
    measured value (units in ``unit``). criterion: the rule, with its threshold. severity: 'urgent'
    or 'abnormal'. territory: 'inferior', 'anterior', 'lateral' (ST elevation, Q waves) or None.
    uncertain: why the measurement behind it is uncertain (``Measurements.flag_reasons``), or ''."""

    key: str
    title: str
    leads: tuple[str, ...]
    values: dict[str, float]
    unit: str
    criterion: str
    severity: str = ABNORMAL
    territory: str | None = None
    uncertain: str = ""

    @property
    def values_text(self) -> str:
        """'II +0.19, III +0.22 mV' / '112 bpm'."""
        signed = self.unit == "mV"
        parts = [f"{name} {value:+.2f}" if signed else f"{name} {value:.0f}" for name, value in self.values.items()]
        return ", ".join(parts) + f" {self.unit}" if parts else ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["leads"] = list(self.leads)
        out["values"] = {k: round(float(v), 3) for k, v in self.values.items()}
        out["values_text"] = self.values_text
        return out


@dataclass
class Findings:
    """What ``assess`` found. findings: criteria met, most serious first. checked: criteria checked
    and not met (sentences). not_assessed: criteria that could not be checked, with the reason."""

    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    not_assessed: list[str] = field(default_factory=list)
    st_assessed: bool = True  # False: the ST level was measured in fewer than 2 leads

    @property
    def stemi(self) -> bool:
        """ST elevation criteria met in some territory."""
        return any(f.key == "st_elevation" for f in self.findings)

    @property
    def urgent(self) -> bool:
        return any(f.severity == URGENT for f in self.findings)

    def contradictions(self, label: str | None) -> list[str]:
        """Sentences saying where the findings disagree with the model's answer ``label`` (a class
        key), most serious first; empty when they agree or there is no answer."""
        if not label:
            return []
        name = display_name(label)
        out = []
        if self.stemi and label != "mi":
            territories = ", ".join(f.territory for f in self.findings if f.key == "st_elevation" and f.territory)
            out.append(f"The measurements meet the ST-elevation (STEMI) criteria ({territories}), but the model "
                       f"says {name}. ST elevation like this can be an acute myocardial infarction: a "
                       "clinician must read this ECG now.")
        others = [f.title for f in self.findings if f.key != "st_elevation"]
        if label == "normal" and others:
            out.append(f"The model says Normal, but the measurements show: {'; '.join(others)}.")
        return out

    def to_dict(self, label: str | None = None) -> dict[str, Any]:
        return {
            "findings": [f.to_dict() for f in self.findings],
            "checked": list(self.checked),
            "not_assessed": list(self.not_assessed),
            "stemi_criteria_met": self.stemi,
            "contradictions": self.contradictions(label),
            "note": NOTE,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Findings:
        """Rebuild from ``to_dict()`` output (stored results)."""
        findings = [Finding(key=f["key"], title=f["title"], leads=tuple(f.get("leads", ())),
                            values=dict(f.get("values", {})), unit=f.get("unit", ""),
                            criterion=f.get("criterion", ""), severity=f.get("severity", ABNORMAL),
                            territory=f.get("territory"), uncertain=f.get("uncertain", ""))
                    for f in data.get("findings", [])]
        return cls(findings, list(data.get("checked", [])), list(data.get("not_assessed", [])))


@dataclass(frozen=True)
class QWave:
    """The initial negative deflection of one lead's QRS, medians over its beats: depth below the
    baseline (mV, >= 0; 0 = no Q), duration (ms), the R wave's height (mV) and the beats measured."""

    depth_mv: float
    duration_ms: float
    r_mv: float
    beats: int

    @property
    def qs(self) -> bool:
        """No R wave: the whole complex is negative."""
        return self.r_mv < _MIN_R_MV and self.depth_mv >= Q_MIN_DEPTH_MV

    def pathological(self, lead: str) -> bool:
        """Whether this Q wave counts towards the prior-infarction criterion in ``lead``."""
        return lead in Q_LEADS and self.meets_size(lead)

    def meets_size(self, lead: str) -> bool:
        """Whether it is as deep and wide as a counting lead's must be (III and V1 are listed with
        their group when it is met, but cannot meet it)."""
        if self.depth_mv < Q_MIN_DEPTH_MV:
            return False
        if self.qs:
            return True
        if lead in ("V2", "V3"):
            return self.duration_ms > Q_WIDE_V2_V3_MS
        return self.duration_ms >= Q_WIDE_MS

    def to_dict(self) -> dict[str, float]:
        return {"depth_mv": round(self.depth_mv, 3), "duration_ms": round(self.duration_ms, 1),
                "r_mv": round(self.r_mv, 3), "beats": self.beats}


# --------------------------------------------------------------------------------------------------
# Assessment
# --------------------------------------------------------------------------------------------------


def assess(measurements: Any, q_waves: Mapping[str, Any] | None = None) -> Findings:
    """Check the criteria (module docstring) on measurements.

    Args:
        measurements: an ``ecgdx.signals.measure.Measurements`` or its ``to_dict()`` (as stored).
        q_waves: lead -> ``QWave`` or its ``to_dict()``, from ``measure_q_waves``; None when Q
            waves were not measured (the Q criterion is then listed as not assessed).

    Returns:
        ``Findings``; never raises for missing values (they are listed as not assessed).
    """
    values = measurements.to_dict() if hasattr(measurements, "to_dict") else dict(measurements or {})
    reasons = values.get("reasons", {}) or {}
    out = Findings()
    st = {lead: v for lead, v in (values.get("st_mv") or {}).items() if v is not None}
    _st_segment(out, st)
    _q_waves(out, q_waves)
    _rate(out, values.get("heart_rate_bpm"), reasons.get("heart_rate_bpm"))
    _rhythm(out, values.get("heart_rate_bpm"), values.get("rr_sdnn_ms"), reasons.get("rr_sdnn_ms"))
    _qrs(out, values.get("qrs_ms"), reasons.get("qrs_ms"))
    _qtc(out, values.get("qtc_bazett_ms"), reasons.get("qtc_bazett_ms"))
    flags, flag_reasons = values.get("flags") or {}, values.get("flag_reasons") or {}
    source = {"tachycardia": "heart_rate_bpm", "bradycardia": "heart_rate_bpm", "irregular_rhythm": "rr_sdnn_ms",
              "wide_qrs": "qrs_ms", "long_qtc": "qtc_bazett_ms"}
    for i, finding in enumerate(out.findings):
        name = source.get(finding.key)
        if name and flags.get(name) == "uncertain":
            out.findings[i] = replace(finding, uncertain=flag_reasons.get(name, "the measurement is uncertain"))
    order = {URGENT: 0, ABNORMAL: 1}
    out.findings.sort(key=lambda f: order.get(f.severity, 2))
    return out


def _elevation_limit(lead: str) -> float:
    return ST_ELEVATION_V2_V3_MV if lead in ("V2", "V3") else ST_ELEVATION_MV


def _contiguous(leads: Iterable[str]) -> set[str]:
    """The leads of ``leads`` that have a contiguous neighbour also in ``leads``."""
    chosen = set(leads)
    return {lead for pair in CONTIGUOUS if set(pair) <= chosen for lead in pair}


def _ordered(leads: Iterable[str]) -> tuple[str, ...]:
    chosen = set(leads)
    return tuple(lead for lead in LEADS if lead in chosen)


def _st_segment(out: Findings, st: dict[str, float]) -> None:
    if len(st) < 2:
        out.st_assessed = False
        out.not_assessed.append("ST elevation and depression: the ST level was measured in fewer than 2 leads")
        return
    elevated = _contiguous(lead for lead, v in st.items() if lead != "aVR" and v >= _elevation_limit(lead))
    depressed_all = {lead for lead, v in st.items() if lead != "aVR" and v <= -ST_DEPRESSION_MV}
    reciprocal_used: set[str] = set()
    for territory, leads in TERRITORIES.items():
        hit = _ordered(lead for lead in leads if lead in elevated)
        if len(hit) < 2:
            continue
        reciprocal = _ordered(lead for lead in RECIPROCAL[territory] if lead in depressed_all)
        reciprocal_used.update(reciprocal)
        shown = {lead: st[lead] for lead in hit + reciprocal}
        title = f"ST elevation in the {territory} leads ({', '.join(hit)})"
        if reciprocal:
            title += f" with reciprocal ST depression in {', '.join(reciprocal)}"
        out.findings.append(Finding(
            key="st_elevation", title=title, leads=hit + reciprocal, values=shown, unit="mV",
            criterion=(f"ST elevation in two contiguous leads: >= {ST_ELEVATION_MV:g} mV, >= "
                       f"{ST_ELEVATION_V2_V3_MV:g} mV in V2-V3 (STEMI criteria, Fourth Universal "
                       "Definition of MI); measured at J + 20 ms"),
            severity=URGENT, territory=territory))
    if not any(f.key == "st_elevation" for f in out.findings):
        out.checked.append(f"No ST elevation in two contiguous leads (>= {ST_ELEVATION_MV:g} mV, >= "
                           f"{ST_ELEVATION_V2_V3_MV:g} mV in V2-V3).")
    depressed = _ordered(_contiguous(depressed_all - reciprocal_used) - elevated)
    if depressed:
        out.findings.append(Finding(
            key="st_depression", title=f"ST depression in {', '.join(depressed)}", leads=depressed,
            values={lead: st[lead] for lead in depressed}, unit="mV",
            criterion=f"ST depression >= {ST_DEPRESSION_MV:g} mV in two contiguous leads (ischaemia criteria)"))
    elif not reciprocal_used:
        out.checked.append(f"No ST depression of {ST_DEPRESSION_MV:g} mV or more in two contiguous leads.")


def _q_waves(out: Findings, q_waves: Mapping[str, Any] | None) -> None:
    if q_waves is None:
        out.not_assessed.append("Pathological Q waves: Q waves were not measured for this result")
        return
    waves = {lead: q if isinstance(q, QWave) else QWave(**{k: q[k] for k in ("depth_mv", "duration_ms", "r_mv", "beats")})
             for lead, q in q_waves.items() if q is not None}
    if len(waves) < 2:
        out.not_assessed.append("Pathological Q waves: fewer than 2 leads had a complete QRS complex to measure")
        return
    counted = {lead for lead, q in waves.items() if q.pathological(lead)}
    met = [group for group in Q_GROUPINGS if len(counted & set(group)) >= 2]
    hit = _ordered(lead for group in met for lead in group
                   if lead in counted or (lead in waves and waves[lead].meets_size(lead)))
    if not hit:
        out.checked.append(f"No pathological Q waves (> {Q_WIDE_V2_V3_MS:.0f} ms in V2-V3, >= {Q_WIDE_MS:.0f} ms "
                           f"and >= {Q_MIN_DEPTH_MV:g} mV elsewhere, or QS complexes) in two leads of a "
                           "contiguous group.")
        return
    # Named by the territories the leads lie in (V1-V6 is one group, anterior and lateral).
    territories = [t for t, leads in TERRITORIES.items() if set(leads) & set(hit)]
    where = " and ".join(territories)
    out.findings.append(Finding(
        key="pathological_q", title=f"Pathological Q waves in the {where} leads ({', '.join(hit)})",
        leads=hit, values={f"{lead} Q": waves[lead].duration_ms for lead in hit}, unit="ms",
        criterion=(f"Q wave > {Q_WIDE_V2_V3_MS:.0f} ms or QS complex in V2-V3; Q wave >= {Q_WIDE_MS:.0f} ms and "
                   f">= {Q_MIN_DEPTH_MV:g} mV deep or QS complex in I, II, aVL, aVF or V4-V6; in two leads of "
                   "a contiguous group (I, aVL; V1-V6; II, III, aVF). A sign of a prior myocardial infarction "
                   "(Fourth Universal Definition of Myocardial Infarction)"),
        territory=territories[0] if len(territories) == 1 else None))


def _rate(out: Findings, rate: float | None, reason: str | None) -> None:
    if rate is None:
        out.not_assessed.append(f"Heart rate: {reason or 'not measured'}")
        return
    if rate > TACHYCARDIA_BPM:
        out.findings.append(Finding("tachycardia", f"Tachycardia ({rate:.0f} bpm)", (), {"heart rate": rate}, "bpm",
                                    f"heart rate > {TACHYCARDIA_BPM:.0f} bpm"))
    elif rate < BRADYCARDIA_BPM:
        out.findings.append(Finding("bradycardia", f"Bradycardia ({rate:.0f} bpm)", (), {"heart rate": rate}, "bpm",
                                    f"heart rate < {BRADYCARDIA_BPM:.0f} bpm"))
    else:
        out.checked.append(f"Heart rate {rate:.0f} bpm is within {BRADYCARDIA_BPM:.0f}-{TACHYCARDIA_BPM:.0f} bpm.")


def _rhythm(out: Findings, rate: float | None, sdnn: float | None, reason: str | None) -> None:
    if rate is None or sdnn is None:
        out.not_assessed.append(f"Rhythm regularity: {reason or 'no RR intervals measured'}")
        return
    mean_rr = 60000.0 / rate
    cv = sdnn / mean_rr
    if cv > IRREGULAR_RR_CV:
        out.findings.append(Finding(
            "irregular_rhythm", f"Irregular rhythm (RR intervals vary by {100 * cv:.0f} %)", (),
            {"RR SDNN": sdnn, "mean RR": mean_rr}, "ms",
            f"SDNN of the RR intervals > {100 * IRREGULAR_RR_CV:.0f} % of the mean RR (atrial fibrillation, "
            "ectopic beats or marked sinus arrhythmia)"))
    else:
        out.checked.append(f"Regular rhythm (RR intervals vary by {100 * cv:.0f} %, limit {100 * IRREGULAR_RR_CV:.0f} %).")


def _qrs(out: Findings, qrs: float | None, reason: str | None) -> None:
    if qrs is None:
        out.not_assessed.append(f"QRS width: {reason or 'not measured'}")
        return
    if qrs >= WIDE_QRS_MS:
        out.findings.append(Finding("wide_qrs", f"Wide QRS ({qrs:.0f} ms)", (), {"QRS": qrs}, "ms",
                                    f"QRS duration >= {WIDE_QRS_MS:.0f} ms (bundle branch block, ventricular rhythm)"))
    else:
        out.checked.append(f"QRS {qrs:.0f} ms is narrower than {WIDE_QRS_MS:.0f} ms.")


def _qtc(out: Findings, qtc: float | None, reason: str | None) -> None:
    if qtc is None:
        out.not_assessed.append(f"QTc: {reason or 'not measured'}")
        return
    if qtc > LONG_QTC_MS:
        out.findings.append(Finding("long_qtc", f"Long QTc ({qtc:.0f} ms, Bazett)", (), {"QTc": qtc}, "ms",
                                    f"QTc (Bazett) > {LONG_QTC_MS:.0f} ms (> {LONG_QTC_MALE_MS:.0f} ms for men)"))
    elif qtc > LONG_QTC_MALE_MS:
        out.findings.append(Finding("long_qtc", f"QTc {qtc:.0f} ms (Bazett): long for a man", (), {"QTc": qtc}, "ms",
                                    f"QTc (Bazett) > {LONG_QTC_MALE_MS:.0f} ms for men, > {LONG_QTC_MS:.0f} ms "
                                    "for women (sex not known here)"))
    else:
        out.checked.append(f"QTc {qtc:.0f} ms (Bazett) is not long (limit {LONG_QTC_MALE_MS:.0f} ms for men, "
                           f"{LONG_QTC_MS:.0f} ms for women).")


# --------------------------------------------------------------------------------------------------
# Q-wave measurement
# --------------------------------------------------------------------------------------------------

# The PR-segment level is the median of the signal 40-10 ms before the QRS onset (as for the ST
# level); the Q is searched from 10 ms before the onset (a lead may start a little before the
# global onset is detected) to the QRS offset.
_BASELINE_S = (-0.04, -0.01)
_EARLY_S = 0.01
# A complex whose highest point is lower than this above the baseline has no R (a QS complex).
_MIN_R_MV = 0.05
# Deflections smaller than this (mV) are reading noise: the Q starts and ends where the signal
# crosses this far below the baseline.
_Q_NOISE_MV = 0.02


def measure_q_waves(leads: Mapping[str, np.ndarray], fs: float,
                    qrs_bounds: Iterable[tuple[int, int]]) -> dict[str, QWave | None]:
    """The Q wave of every lead, medians over the beats its window holds (None: no complete beat).

    Args:
        leads: lead name -> (N,) mV on the record's time axis (NaN = not printed), e.g.
            ``DigitizedECG.leads_dict()``.
        fs: sampling rate (Hz).
        qrs_bounds: (onset, offset) sample indices of each beat's QRS on the same axis
            (``Measurements.qrs_bounds``: the global boundaries of ``ecgdx.signals.measure``).
    """
    if fs <= 0:
        raise ValueError(f"fs must be positive, got {fs}")
    bounds = []
    for pair in qrs_bounds:
        if np.ndim(pair) != 1 or len(pair) != 2:
            raise ValueError("qrs_bounds must be (onset, offset) sample pairs (Measurements.qrs_bounds), not R peaks")
        bounds.append((int(pair[0]), int(pair[1])))
    out: dict[str, QWave | None] = {}
    for lead in LEADS:
        x = leads.get(lead)
        if x is None:
            out[lead] = None
            continue
        x = np.asarray(x, float)
        beats = [beat for beat in (_one_q(x, fs, onset, offset) for onset, offset in bounds) if beat is not None]
        if not beats:
            out[lead] = None
            continue
        depth, duration, r = (float(np.median([b[k] for b in beats])) for k in range(3))
        out[lead] = QWave(depth, duration, r, len(beats))
    return out


def _one_q(x: np.ndarray, fs: float, onset: int, offset: int) -> tuple[float, float, float] | None:
    """(Q depth mV, Q duration ms, R height mV) of the beat whose QRS spans onset..offset, or None
    when the lead's window does not hold the PR segment and the whole QRS."""
    b0, b1 = onset + int(round(_BASELINE_S[0] * fs)), onset + int(round(_BASELINE_S[1] * fs))
    q0 = onset - int(round(_EARLY_S * fs))
    if b0 < 0 or offset + 1 > len(x) or offset <= q0 or not np.isfinite(x[b0 : offset + 1]).all():
        return None
    base = float(np.median(x[b0 : b1 + 1]))
    complex_ = x[q0 : offset + 1] - base
    r_height = max(0.0, float(complex_.max()))
    if r_height < _MIN_R_MV:
        return -float(complex_.min()), float((complex_ < -_Q_NOISE_MV).sum()) / fs * 1000.0, r_height
    # The Q is the initial deflection when it is negative: from where the signal first leaves the
    # baseline (downwards) to where it comes back up across it.
    away = np.flatnonzero(np.abs(complex_) > _Q_NOISE_MV)
    if not len(away) or complex_[away[0]] > 0:
        return 0.0, 0.0, r_height
    start = int(away[0])
    back = np.flatnonzero(complex_[start:] >= -_Q_NOISE_MV)
    end = start + (int(back[0]) if len(back) else len(complex_) - start)
    return -float(complex_[start:end].min()), (end - start) / fs * 1000.0, r_height


def r_peaks(leads: Mapping[str, np.ndarray], fs: float) -> list[int]:
    """R-peak sample indices on the record's time axis from neurokit2 on the rhythm signal ``ecgdx.signals.measure``
    uses; empty when none are found. Code that has run ``measure`` uses its ``Measurements.r_peaks``
    instead (the same beats, refined and with missed ones searched back, and no second detection)."""
    import warnings

    from ecgdx.signals import measure as _measure

    source, segment, offset = _measure.rhythm_signal({k: np.asarray(v, float) for k, v in leads.items()}, fs)
    if source is None:
        return []
    import neurokit2 as nk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cleaned = nk.ecg_clean(segment, sampling_rate=int(round(fs)))
            _, info = nk.ecg_peaks(cleaned, sampling_rate=int(round(fs)))
    except Exception:  # noqa: BLE001 - neurokit2 raises assorted errors on flat or odd signals
        return []
    return [int(p) + offset for p in info["ECG_R_Peaks"] if math.isfinite(p)]


def measure_page(source: Any, *, normalize: bool = True) -> tuple[Any, Findings]:
    """Digitise a page (``ecgdx.signals.digitize``: path, bytes or gray array; ``normalize`` as there),
    measure it and check the criteria: (``Measurements``, ``Findings``), what ``ecgdx digitize
    --measure`` and the web app find on it.

    Raises: ``ecgdx.errors.EcgdxError`` subclasses when the page cannot be digitised (no lead layout,
    unreadable picture). Needs the [signal] extra (neurokit2) for the R peaks.
    """
    from ecgdx.signals.digitize import digitize
    from ecgdx.signals.measure import measure

    result = digitize(source, normalize=normalize)
    values = measure(result, result.fs)
    return values, assess(values, measure_q_waves(result.leads_dict(), result.fs, values.qrs_bounds))


def page_findings(source: Any, *, normalize: bool = True) -> Findings:
    """The ``Findings`` of ``measure_page``."""
    return measure_page(source, normalize=normalize)[1]


def st_elevation_of(source: Any, *, normalize: bool = True) -> bool | None:
    """Whether a page's digitised leads meet the ST-elevation criteria; None when the page cannot be
    digitised (the finding the decision weighs, ``ecgdx.decision``)."""
    from ecgdx.errors import EcgdxError

    try:
        return page_findings(source, normalize=normalize).stemi
    except EcgdxError:
        return None
