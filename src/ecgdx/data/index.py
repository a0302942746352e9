"""Index a folder of ECG images into a manifest CSV: labels, templates, hashes, groups, splits.

The manifest is the single source of truth for training and evaluation. Identical files (same
sha256) form one group that always lands in one split; a group whose copies carry different labels
is a conflict and is left out entirely (recorded in the sidecar `<manifest>.conflicts.csv`, which is
rewritten on every index, so `data report` can tell "no conflicts" from "not recorded").

Labels come from, in priority: an explicit labels CSV, a `labels.csv` directly in the folder, or
folder names of the Mendeley "ECG Images dataset of Cardiac Patients" (both published layouts) and
plain `<class_key>/` folders. Anything else (COVID-19 folders, unlabelled files) is reported on
stderr and left out, never merged into a class.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import os
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ecgdx.data.split import DEFAULT_RATIOS, SPLITS, assign_splits, validate_ratios
from ecgdx.errors import DataError, InvalidImageError
from ecgdx.labels import CLASS_KEYS, TEMPLATES, UNKNOWN_TEMPLATE

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "relpath",
    "label",
    "template",
    "sha256",
    "md5",
    "width",
    "height",
    "bytes",
    "group",
    "split",
)
CONFLICT_COLUMNS: tuple[str, ...] = ("relpath", "label", "sha256", "group")
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VALID_TEMPLATES: frozenset[str] = frozenset((*TEMPLATES, UNKNOWN_TEMPLATE))
LABELS_FILE_NAME = "labels.csv"

# Hex characters of the sha256 used as group id: 64 bits, no realistic collision at dataset scale.
GROUP_ID_LENGTH = 16
_HASH_CHUNK_BYTES = 1 << 20
# Below this many files the bar only adds noise.
_PROGRESS_MIN_FILES = 50
# Words that mark a diagnosis outside the 4 classes. They veto a folder or label even if it also
# names a class ("COVID-19 patients with abnormal heartbeat" is still not our class).
_OTHER_DIAGNOSIS_KEYWORDS: tuple[str, ...] = ("covid", "sarscov", "coronavirus")
_OTHER_DIAGNOSIS_LABELS: frozenset[str] = frozenset({"other", "excluded"})

Reporter = Callable[[str], None]


def print_to_stderr(message: str) -> None:
    """Default reporter: progress notes and skip reports go to stderr, never into stdout data."""
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class ManifestRow:
    """One image in the manifest; fields match MANIFEST_COLUMNS."""

    path: str
    relpath: str
    label: str
    template: str
    sha256: str
    md5: str
    width: int
    height: int
    bytes: int
    group: str
    split: str


@dataclass(frozen=True)
class ConflictRow:
    """One file left out because identical bytes elsewhere carry another label."""

    relpath: str
    label: str
    sha256: str
    group: str


@dataclass(frozen=True)
class LabelEntry:
    """What a labels file says about one file; template is None when the file does not say."""

    label: str
    template: str | None


@dataclass
class IndexResult:
    """Outcome of build_manifest: kept rows, conflicting files, and (relpath, reason) of skipped files."""

    rows: list[ManifestRow]
    conflicts: list[ConflictRow]
    skipped: list[tuple[str, str]]
    label_source: str


# ----------------------------------------------------------------------------------------------
# Labels from folder names and labels files
# ----------------------------------------------------------------------------------------------


def _normalise_words(text: str) -> list[str]:
    """Lower-case words of a name, dropping '(859)' / '(284x12=3408)' counts and punctuation."""
    without_counts = re.sub(r"\([^)]*\)", " ", text.lower())
    return re.findall(r"[a-z0-9]+", without_counts)


def is_other_diagnosis(text: str) -> bool:
    """True for names/labels that clearly denote a diagnosis outside the 4 classes (e.g. COVID-19)."""
    words = _normalise_words(text)
    compact = "".join(words)
    return (
        any(keyword in compact for keyword in _OTHER_DIAGNOSIS_KEYWORDS)
        or " ".join(words) in _OTHER_DIAGNOSIS_LABELS
    )


def label_from_folder_name(name: str) -> str | None:
    """Class key named by a folder, or None if it names none (or another diagnosis).

    Matches by keyword so both Mendeley layouts work ('... abnormal heartbeat (233x12=2796)' and
    '... abnormal heart beats (548)') as do plain class-key folders. Order matters: 'History of MI'
    contains 'MI', and 'abnormal' contains 'normal', so the more specific classes are tested first.
    """
    if is_other_diagnosis(name):
        return None
    words = _normalise_words(name)
    compact = "".join(words)
    if "historyofmi" in compact or "historyofmyocardialinfarction" in compact:
        return "history_of_mi"
    if "abnormalheartbeat" in compact:
        return "abnormal_heartbeat"
    if "myocardialinfarction" in compact or "mi" in words:
        return "mi"
    if "normal" in words:
        return "normal"
    return None


def label_from_folders(relpath: str) -> str | None:
    """Label of a file from its nearest folder that names a class.

    The nearest folder wins because it is the most specific; a nearer 'other diagnosis' folder stops
    the search so a COVID subfolder inside a class folder is not merged into that class.
    """
    for folder in reversed(relpath.split("/")[:-1]):
        if is_other_diagnosis(folder):
            return None
        label = label_from_folder_name(folder)
        if label is not None:
            return label
    return None


def _normalise_relpath(text: str) -> str:
    """Canonical relative path: forward slashes, no leading './', NFC (macOS writes NFD names)."""
    cleaned = unicodedata.normalize("NFC", text.strip().replace("\\", "/"))
    while cleaned.startswith("./"):
        cleaned = cleaned[2:]
    return cleaned


def read_labels_file(path: Path) -> tuple[dict[str, LabelEntry], list[str]]:
    """Read a labels CSV (columns `file,label`, optional `template`; `file` relative to the data folder).

    Returns (entries by relpath, relpaths marked as another diagnosis). Raises DataError naming the
    line for a label that is not a class key, an invalid template, or a file listed twice with
    different labels.
    """
    if not path.is_file():
        raise DataError(f"labels file not found: {path}")
    entries: dict[str, LabelEntry] = {}
    other_diagnosis: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in ("file", "label") if name not in columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}"
            )
        reader.fieldnames = columns
        for row in reader:
            line = reader.line_num
            relpath = _normalise_relpath(row.get("file") or "")
            raw_label = (row.get("label") or "").strip()
            if not relpath:
                raise DataError(f"{path} line {line}: empty 'file'")
            label = raw_label.lower()
            if label not in CLASS_KEYS:
                if is_other_diagnosis(raw_label):
                    other_diagnosis.append(relpath)
                    continue
                raise DataError(
                    f"{path} line {line}: label {raw_label!r} for {relpath!r} is not one of {', '.join(CLASS_KEYS)}"
                )
            template = (row.get("template") or "").strip() or None
            if template is not None and template not in VALID_TEMPLATES:
                raise DataError(
                    f"{path} line {line}: template {template!r} is not one of {', '.join(sorted(VALID_TEMPLATES))}"
                )
            previous = entries.get(relpath)
            if previous is not None and previous.label != label:
                raise DataError(
                    f"{path} line {line}: {relpath!r} listed again with label {label!r} (was {previous.label!r})"
                )
            entries[relpath] = LabelEntry(label, template)
    return entries, other_diagnosis


# ----------------------------------------------------------------------------------------------
# Scanning, hashing, image facts
# ----------------------------------------------------------------------------------------------


def find_images(root: Path) -> list[str]:
    """Relative paths (forward slashes, sorted) of image files under root, recursively.

    Hidden files and folders (and macOS '__MACOSX' zip debris) are ignored: '._x.jpg' resource
    forks carry an image extension but are not images.
    """
    found: list[str] = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [
            name for name in subdirectories if not name.startswith(".") and name != "__MACOSX"
        ]
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            found.append(Path(directory, name).relative_to(root).as_posix())
    return sorted(found)


def hash_file(path: Path) -> tuple[str, str, int]:
    """(sha256 hex, md5 hex, size in bytes), reading in chunks so large scans use little memory.

    md5 is kept only because the Mendeley labels record it; sha256 is the identity.
    """
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha256.hexdigest(), md5.hexdigest(), size


def read_image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as displayed (EXIF orientation applied, as ecgdx.page.preprocessing does).

    Decodes fully (to gray, the cheapest full decode) so truncated files are caught here, not in
    training. Raises InvalidImageError if OpenCV cannot decode it. Reads via numpy so non-ASCII
    paths work on every platform.
    """
    import cv2  # lazy: keeps `ecgdx --help` fast
    import numpy as np

    encoded = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE) if encoded.size else None
    if image is None or image.size == 0:
        raise InvalidImageError(f"cannot decode {path} as an image")
    height, width = image.shape[:2]
    return int(width), int(height)


def _load_template_detector() -> Callable[[Path], str] | None:
    """detect_template from ecgdx.page.preprocessing as a path -> template function, or None if unavailable.

    Only the import is guarded: an error raised while detecting is a real bug and must surface.
    """
    try:
        # import_module (not `from ecgdx import preprocessing`) always goes through sys.modules,
        # so the module can be replaced or blocked there, e.g. in tests.
        preprocessing = importlib.import_module("ecgdx.page.preprocessing")
        decode_image = preprocessing.decode_image
        detect_template = preprocessing.detect_template
    except (ImportError, AttributeError):
        return None

    def detect(path: Path) -> str:
        template = str(detect_template(decode_image(path)))
        return template if template in VALID_TEMPLATES else UNKNOWN_TEMPLATE

    return detect


@dataclass(frozen=True)
class _FileFacts:
    """What reading one file tells us (internal to build_manifest)."""

    sha256: str
    md5: str
    bytes: int
    width: int
    height: int
    template: str


@dataclass(frozen=True)
class _Unusable:
    """Why one file cannot be indexed: a short reason for the grouped report, and the full detail."""

    reason: str
    detail: str


def _inspect_file(
    path: Path, template: str | None, detector: Callable[[Path], str] | None
) -> _FileFacts | _Unusable:
    """Hash, size and template of one file, or why it cannot be used (unreadable, refused by preprocessing)."""
    try:
        sha256, md5, size = hash_file(path)
        width, height = read_image_size(path)
    except (OSError, InvalidImageError) as error:
        return _Unusable("unreadable image", str(error))
    if template is None:
        try:
            template = detector(path) if detector is not None else UNKNOWN_TEMPLATE
        except InvalidImageError as error:
            # The image decodes, but the pipeline's own decoder refuses it (e.g. far too small to be
            # a page); training would fail on it later, so it is left out now.
            return _Unusable("refused by ecgdx.page.preprocessing", str(error))
    return _FileFacts(sha256, md5, size, width, height, template)


def _progress(items: Iterable, total: int, description: str) -> Iterable:
    """Wrap items in a tqdm bar on stderr for large, interactive runs; plain items otherwise."""
    if total < _PROGRESS_MIN_FILES or not sys.stderr.isatty():
        return items
    try:
        from tqdm import tqdm  # lazy: only index runs need it
    except ImportError:
        return items
    return tqdm(items, total=total, desc=description, unit="img", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Building the manifest
# ----------------------------------------------------------------------------------------------


def _resolve_labels(
    root: Path, relpaths: Sequence[str], labels_path: Path | None, report: Reporter
) -> tuple[dict[str, LabelEntry], list[tuple[str, str]], str]:
    """Label every file (labels file first, then folder names); return (labelled, skipped, source)."""
    if labels_path is None and (root / LABELS_FILE_NAME).is_file():
        labels_path = root / LABELS_FILE_NAME
        report(f"using labels from {labels_path} (found in the data folder)")

    labelled: dict[str, LabelEntry] = {}
    skipped: list[tuple[str, str]] = []
    if labels_path is not None:
        entries, other_diagnosis = read_labels_file(labels_path)
        other = set(other_diagnosis)
        for relpath in relpaths:
            key = _normalise_relpath(relpath)  # the labels file may spell names in another Unicode form
            if key in entries:
                labelled[relpath] = entries[key]
            elif key in other:
                skipped.append((relpath, f"labelled as another diagnosis in {labels_path.name}"))
            else:
                skipped.append((relpath, f"not listed in {labels_path.name}"))
        missing = sorted(set(entries) - {_normalise_relpath(relpath) for relpath in relpaths})
        if missing:
            report(
                f"warning: {len(missing)} file(s) listed in {labels_path.name} not found under {root} (first: {missing[0]!r})"
            )
        return labelled, skipped, str(labels_path)

    report(f"labels from folder names under {root}")
    for relpath in relpaths:
        label = label_from_folders(relpath)
        if label is None:
            skipped.append((relpath, "not one of the 4 classes"))
        else:
            labelled[relpath] = LabelEntry(label, None)
    return labelled, skipped, "folder names"


def _report_skipped(skipped: Sequence[tuple[str, str]], report: Reporter) -> None:
    """One line per (folder, reason): 'skipped N files in X: reason'."""
    counts = Counter((relpath.rpartition("/")[0] or ".", reason) for relpath, reason in skipped)
    for (folder, reason), count in sorted(counts.items()):
        report(f"skipped {count} file{'s' if count != 1 else ''} in {folder!r}: {reason}")


def group_id(sha256: str) -> str:
    """Duplicate-group id of a file: the first GROUP_ID_LENGTH hex characters of its sha256."""
    return sha256[:GROUP_ID_LENGTH]


def find_conflicts(rows: Sequence[ManifestRow]) -> tuple[list[ManifestRow], list[ConflictRow]]:
    """Split rows into (kept, conflicting): a group whose files carry different labels is dropped whole."""
    labels_by_group: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        labels_by_group[row.group].add(row.label)
    conflicted = {group for group, labels in labels_by_group.items() if len(labels) > 1}
    kept = [row for row in rows if row.group not in conflicted]
    conflicts = [
        ConflictRow(row.relpath, row.label, row.sha256, row.group) for row in rows if row.group in conflicted
    ]
    return kept, conflicts


def duplicate_stats(rows: Sequence[ManifestRow]) -> tuple[int, int]:
    """(groups with more than one file, extra copies beyond the first of each group)."""
    sizes = Counter(row.group for row in rows)
    return sum(1 for size in sizes.values() if size > 1), sum(size - 1 for size in sizes.values())


def build_manifest(
    root: Path,
    labels_path: Path | None = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    report: Reporter = print_to_stderr,
    workers: int | None = None,
) -> IndexResult:
    """Scan root, label, hash, group duplicates, drop conflicts and assign splits.

    Files that are unlabelled, of another diagnosis or unreadable are reported and left out.
    Raises ValueError for invalid ratios, DataError if root is not a folder or a labels file is invalid.
    """
    ratios = validate_ratios(ratios)  # fail before minutes of hashing, not after
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    relpaths = find_images(root)
    labelled, skipped, label_source = _resolve_labels(root, relpaths, labels_path, report)

    needs_detection = any(entry.template is None for entry in labelled.values())
    detector = _load_template_detector() if needs_detection else None
    if needs_detection and detector is None:
        report("template detection unavailable (ecgdx.page.preprocessing not importable): template = unknown")

    def inspect(relpath: str) -> _FileFacts | _Unusable:
        return _inspect_file(root / relpath, labelled[relpath].template, detector)

    order = sorted(labelled)
    # Threads: hashlib and OpenCV release the GIL, so decoding overlaps across cores.
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        results = list(_progress(pool.map(inspect, order), len(order), "indexing"))

    rows: list[ManifestRow] = []
    for relpath, facts in zip(order, results, strict=True):
        if isinstance(facts, _Unusable):
            skipped.append((relpath, facts.reason))
            report(f"{facts.reason}: {relpath!r}: {facts.detail}")
            continue
        rows.append(
            ManifestRow(
                path=str((root / relpath).resolve()),
                relpath=relpath,
                label=labelled[relpath].label,
                template=facts.template,
                sha256=facts.sha256,
                md5=facts.md5,
                width=facts.width,
                height=facts.height,
                bytes=facts.bytes,
                group=group_id(facts.sha256),
                split="",
            )
        )
    _report_skipped(skipped, report)

    rows, conflicts = find_conflicts(rows)
    if conflicts:
        groups = sorted({conflict.group for conflict in conflicts})
        report(
            f"CONFLICT: {len(groups)} group(s) of identical files carry different labels; left out {len(conflicts)} file(s):"
        )
        for conflict in conflicts:
            report(f"  group {conflict.group}: {conflict.relpath!r} labelled {conflict.label!r}")
    duplicate_groups, extra_copies = duplicate_stats(rows)
    if duplicate_groups:
        report(
            f"{duplicate_groups} duplicate group(s), {extra_copies} extra cop{'ies' if extra_copies != 1 else 'y'}: copies share one split"
        )

    splits = assign_splits(rows, ratios, seed)
    rows = [dataclasses.replace(row, split=split) for row, split in zip(rows, splits, strict=True)]
    return IndexResult(rows=rows, conflicts=conflicts, skipped=skipped, label_source=label_source)


# ----------------------------------------------------------------------------------------------
# Manifest files
# ----------------------------------------------------------------------------------------------


def conflicts_path_for(manifest_path: Path) -> Path:
    """Sidecar path of a manifest's conflicts: 'manifest.csv' -> 'manifest.conflicts.csv'."""
    manifest_path = Path(manifest_path)
    stem = manifest_path.stem if manifest_path.suffix.lower() == ".csv" else manifest_path.name
    return manifest_path.with_name(f"{stem}.conflicts.csv")


def _write_csv(path: Path, columns: Sequence[str], records: Iterable[object]) -> None:
    """Write dataclass records as CSV atomically, so an interrupted run never leaves half a manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow([getattr(record, column) for column in columns])
    os.replace(temporary, path)


def write_manifest(rows: Sequence[ManifestRow], path: Path) -> None:
    """Write rows (sorted by relpath) with MANIFEST_COLUMNS."""
    _write_csv(Path(path), MANIFEST_COLUMNS, sorted(rows, key=lambda row: row.relpath))


def write_conflicts(conflicts: Sequence[ConflictRow], manifest_path: Path) -> Path:
    """Write the conflicts sidecar (header only when there are none) and return its path."""
    path = conflicts_path_for(manifest_path)
    _write_csv(path, CONFLICT_COLUMNS, sorted(conflicts, key=lambda row: (row.group, row.relpath)))
    return path


def _parse_int(value: str, column: str, where: str) -> int:
    """Parse a non-negative integer cell, or raise DataError saying where."""
    try:
        number = int(value)
    except ValueError:
        raise DataError(f"{where}: {column} {value!r} is not an integer") from None
    if number < 0:
        raise DataError(f"{where}: {column} {number} is negative")
    return number


_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


def _row_from_record(record: dict[str, str], where: str) -> ManifestRow:
    """Validate one manifest CSV record and convert it to a ManifestRow."""
    label, template, split = record["label"], record["template"], record["split"]
    if label not in CLASS_KEYS:
        raise DataError(f"{where}: label {label!r} is not one of {', '.join(CLASS_KEYS)}")
    if template not in VALID_TEMPLATES:
        raise DataError(f"{where}: template {template!r} is not one of {', '.join(sorted(VALID_TEMPLATES))}")
    if split not in SPLITS:
        raise DataError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    if not _SHA256_PATTERN.fullmatch(record["sha256"]):
        raise DataError(f"{where}: sha256 {record['sha256']!r} is not 64 lower-case hex characters")
    if not record["group"]:
        raise DataError(f"{where}: empty group")
    return ManifestRow(
        path=record["path"],
        relpath=record["relpath"],
        label=label,
        template=template,
        sha256=record["sha256"],
        md5=record["md5"],
        width=_parse_int(record["width"], "width", where),
        height=_parse_int(record["height"], "height", where),
        bytes=_parse_int(record["bytes"], "bytes", where),
        group=record["group"],
        split=split,
    )


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and validate a manifest CSV; raises DataError naming the file, line and problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in MANIFEST_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: not an ecgdx manifest, missing column(s) {', '.join(missing)}")
        rows = []
        for record in reader:
            where = f"{path} line {reader.line_num}"
            if any(record.get(column) is None for column in MANIFEST_COLUMNS):
                raise DataError(f"{where}: too few fields")
            rows.append(_row_from_record(record, where))
    return rows


def read_conflicts(manifest_path: Path) -> list[ConflictRow] | None:
    """Conflicts recorded beside a manifest, or None when no sidecar exists (not recorded)."""
    path = conflicts_path_for(manifest_path)
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in CONFLICT_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        return [ConflictRow(*(record[column] for column in CONFLICT_COLUMNS)) for record in reader]


def manifest_fingerprint(rows: Iterable[ManifestRow]) -> str:
    """sha256 over the sorted (sha256, label, split) triples: same data and split => same fingerprint,
    wherever the files live (paths are deliberately left out)."""
    digest = hashlib.sha256()
    for triple in sorted((row.sha256, row.label, row.split) for row in rows):
        digest.update((",".join(triple) + "\n").encode())
    return digest.hexdigest()


def hashes_shared_between_splits(rows: Iterable[ManifestRow]) -> list[str]:
    """sha256 values that appear in more than one split (must be empty: otherwise test leaks into train)."""
    splits_by_hash: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        splits_by_hash[row.sha256].add(row.split)
    return sorted(sha for sha, splits in splits_by_hash.items() if len(splits) > 1)


def summarize_manifest(rows: Sequence[ManifestRow], conflicts: Sequence[ConflictRow] | None) -> dict:
    """Counts for `data report` as plain dicts (JSON-ready), classes always in CLASS_KEYS order.

    conflicts is None when the manifest has no conflicts sidecar.
    """
    templates = sorted({row.template for row in rows} | set(TEMPLATES), key=_template_order)
    duplicate_groups, extra_copies = duplicate_stats(rows)
    by_class: dict[str, dict] = {}
    for label in CLASS_KEYS:
        class_rows = [row for row in rows if row.label == label]
        by_class[label] = {
            "rows": len(class_rows),
            "groups": len({row.group for row in class_rows}),
            "templates": {
                template: sum(row.template == template for row in class_rows) for template in templates
            },
            "splits": {split: sum(row.split == split for row in class_rows) for split in SPLITS},
        }
    strata: dict[str, dict[str, int]] = {}
    for label in CLASS_KEYS:
        for template in templates:
            stratum_rows = [row for row in rows if row.label == label and row.template == template]
            if stratum_rows:
                strata[f"{label}/{template}"] = {
                    split: sum(row.split == split for row in stratum_rows) for split in SPLITS
                }
    shared = hashes_shared_between_splits(rows)
    return {
        "rows": len(rows),
        "groups": len({row.group for row in rows}),
        "fingerprint": manifest_fingerprint(rows),
        "classes": by_class,
        "splits": {split: sum(row.split == split for row in rows) for split in SPLITS},
        "strata": strata,
        "duplicates": {"groups": duplicate_groups, "extra_copies": extra_copies},
        "conflicts": None
        if conflicts is None
        else {
            "groups": len({conflict.group for conflict in conflicts}),
            "files": [dataclasses.asdict(conflict) for conflict in conflicts],
        },
        "hashes_shared_between_splits": len(shared),
        "shared_hashes": shared,
    }


def _template_order(template: str) -> tuple[int, str]:
    """Known templates in TEMPLATES order, then others alphabetically, 'unknown' last."""
    if template in TEMPLATES:
        return (0, f"{TEMPLATES.index(template):03d}")
    return (2 if template == UNKNOWN_TEMPLATE else 1, template)
