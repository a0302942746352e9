"""`ecgdx data index` and `ecgdx data report`.

Only argparse and the standard library are imported at module level so `ecgdx --help` stays fast;
the work (numpy, OpenCV) is imported when a sub-command runs.

Exit codes: 0 success; 1 data problem (missing folder, bad labels file, no labelled images,
invalid manifest, hashes shared between splits); 2 invalid arguments (e.g. split ratios).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_DATA_ERROR = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command (sub-commands `index` and `report`) to a CLI's subparsers."""
    data = subparsers.add_parser(
        "data", help="index an ECG image folder into a manifest; report on a manifest"
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="{index,report}")

    index = data_commands.add_parser(
        "index",
        help="scan a folder of ECG images and write a manifest CSV with labels, hashes and splits",
        description="Scan DIR recursively for images, label them (labels file or folder names), hash them, "
        "group identical files, drop label conflicts and assign group-aware stratified splits.",
    )
    index.add_argument("directory", type=Path, metavar="DIR", help="folder of ECG images")
    index.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    index.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels CSV (columns file,label[,template]; file relative to DIR). Default: DIR/labels.csv if "
        "present, else folder names",
    )
    index.add_argument(
        "--split-ratios", default="0.7,0.15,0.15", help="train,val,test fractions (default 0.7,0.15,0.15)"
    )
    index.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    index.set_defaults(func=run_index)

    report = data_commands.add_parser(
        "report", help="print class, template, split, duplicate and conflict counts"
    )
    report.add_argument("manifest", type=Path, help="manifest CSV written by `ecgdx data index`")
    report.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    report.set_defaults(func=run_report)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run_index(args: argparse.Namespace) -> int:
    """Build and write the manifest (and its conflicts sidecar); return an exit code."""
    from ecgdx.data import index
    from ecgdx.data.split import parse_ratios
    from ecgdx.errors import DataError

    try:
        ratios = parse_ratios(args.split_ratios)
    except ValueError as error:
        _error(str(error))
        return EXIT_USAGE
    try:
        result = index.build_manifest(args.directory, labels_path=args.labels, ratios=ratios, seed=args.seed)
    except DataError as error:
        _error(str(error))
        return EXIT_DATA_ERROR
    if not result.rows:
        _error(f"no labelled images found under {args.directory}; nothing written")
        return EXIT_DATA_ERROR

    index.write_manifest(result.rows, args.out)
    conflicts_path = index.write_conflicts(result.conflicts, args.out)
    split_counts = {
        split: sum(row.split == split for row in result.rows) for split in ("train", "val", "test")
    }
    print(
        f"wrote {args.out}: {len(result.rows)} images ({', '.join(f'{k} {v}' for k, v in split_counts.items())}); "
        f"{len(result.skipped)} skipped, {len(result.conflicts)} in conflicts (see {conflicts_path.name})",
        file=sys.stderr,
    )
    return EXIT_OK


def run_report(args: argparse.Namespace) -> int:
    """Print the manifest summary (text or JSON) to stdout; exit 1 if any hash is shared between splits."""
    from ecgdx.data import index
    from ecgdx.errors import DataError

    try:
        rows = index.read_manifest(args.manifest)
        conflicts = index.read_conflicts(args.manifest)
    except DataError as error:
        _error(str(error))
        return EXIT_DATA_ERROR
    summary = index.summarize_manifest(rows, conflicts)
    summary["manifest"] = str(args.manifest)
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        print(format_report(summary))
    return EXIT_DATA_ERROR if summary["hashes_shared_between_splits"] else EXIT_OK


def _table(header: list[str], body: list[list[object]]) -> list[str]:
    """Fixed-width text table: first column left-aligned, numbers right-aligned."""
    cells = [header] + [[str(cell) for cell in row] for row in body]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(cells[0]), line(["-" * width for width in widths]), *(line(row) for row in cells[1:])]


def format_report(summary: dict) -> str:
    """Readable text of a summarize_manifest() dict."""
    classes: dict[str, dict] = summary["classes"]
    templates = list(next(iter(classes.values()))["templates"]) if classes else []
    splits = list(summary["splits"])
    lines = [
        f"manifest: {summary.get('manifest', '')}",
        f"images: {summary['rows']}  groups: {summary['groups']}",
        "",
    ]

    per_class = [[label, counts["rows"], counts["groups"]] for label, counts in classes.items()]
    per_class.append(["total", summary["rows"], summary["groups"]])
    lines += ["per class", *_table(["class", "rows", "groups"], per_class), ""]

    by_template = [[label, *counts["templates"].values()] for label, counts in classes.items()]
    by_template.append(
        ["total", *(sum(counts["templates"][t] for counts in classes.values()) for t in templates)]
    )
    lines += ["class x template", *_table(["class", *templates], by_template), ""]

    by_split = [[label, *counts["splits"].values()] for label, counts in classes.items()]
    by_split.append(["total", *summary["splits"].values()])
    lines += ["class x split", *_table(["class", *splits], by_split), ""]

    by_stratum = [[stratum, *counts.values()] for stratum, counts in summary["strata"].items()]
    lines += ["class/template x split", *_table(["stratum", *splits], by_stratum), ""]

    duplicates = summary["duplicates"]
    lines.append(f"duplicate groups: {duplicates['groups']}  extra copies: {duplicates['extra_copies']}")
    conflicts = summary["conflicts"]
    if conflicts is None:
        lines.append("conflicts: not recorded (no conflicts sidecar next to the manifest)")
    else:
        lines.append(f"conflicts: {conflicts['groups']} group(s), {len(conflicts['files'])} file(s) left out")
        lines += [
            f"  group {item['group']}: {item['relpath']} ({item['label']})" for item in conflicts["files"]
        ]
    lines.append(f"hashes shared between splits: {summary['hashes_shared_between_splits']}")
    lines += [f"  shared: {sha}" for sha in summary["shared_hashes"]]
    lines.append(f"fingerprint: {summary['fingerprint']}")
    return "\n".join(lines)
