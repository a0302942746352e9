"""The class contract, written down once.

Every model output, probability vector, manifest and report uses this order. Changing it
invalidates every trained model, so it is fixed.
"""

from __future__ import annotations

CLASS_KEYS: tuple[str, ...] = ("normal", "mi", "abnormal_heartbeat", "history_of_mi")

DISPLAY_NAMES: dict[str, str] = {
    "normal": "Normal",
    "mi": "Myocardial Infarction",
    "abnormal_heartbeat": "Abnormal Heartbeat",
    "history_of_mi": "History of MI",
}

NUM_CLASSES = len(CLASS_KEYS)

# Standard 12-lead order, plus the long rhythm strip printed under the panels.
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
RHYTHM_STRIP = "rhythm"

# Print templates of the EDAN SE-3 pages in the Mendeley dataset (see shared/data/README.md).
TEMPLATES: tuple[str, ...] = ("3x4_grid", "6x2_nogrid")
UNKNOWN_TEMPLATE = "unknown"


def class_index(key: str) -> int:
    """Position of a class key in CLASS_KEYS; raises ValueError naming the valid keys."""
    try:
        return CLASS_KEYS.index(key)
    except ValueError:
        raise ValueError(f"unknown class {key!r}; expected one of {', '.join(CLASS_KEYS)}") from None


def display_name(key: str) -> str:
    """Human name of a class key, e.g. 'mi' -> 'Myocardial Infarction'."""
    class_index(key)
    return DISPLAY_NAMES[key]
