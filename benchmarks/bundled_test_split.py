"""The bundled model on the fixed test split, as it ships: the tables of MODEL_CARD.md's "Test results".

    python benchmarks/bundled_test_split.py [--manifest data/manifest.csv] [--model M.onnx]
        [--markdown out.md] [--picture docs/images/misread-test-pages.png] [--n-boot 1000] [--measure]

Every test page is read by ``Predictor`` exactly as ``ecgdx predict`` reads it (gate bypassed with
``force=True`` so that every page is scored, as in training). The decision metrics use the model's
own decision (its decision rule over the balanced-prior probabilities); ECE uses the data-mix
probabilities. The script then checks the headline against the ``test_metrics`` in the model's
metadata (written at export from the cross-validation's out-of-fold logits) and exits non-zero when
they differ by more than rounding: a disagreement means the ONNX pipeline is not the pipeline that
was evaluated. ``--picture`` draws the MI and History-of-MI pages the model calls Normal (the misses
that matter most), the page above and the canonical page the model saw below.

``--measure`` reads every page as ``ecgdx predict --measure`` and the web app do: digitised first,
and the ST-elevation finding weighed into the decision (when the model's rule carries its rates).
The metadata's ``test_metrics`` are those of the picture alone, so this run is not checked against
them; it prints how many decisions the finding changed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HEADLINE = ("accuracy", "macro_f1", "balanced_accuracy", "ece", "mi_sensitivity")
HEADER_FRACTION = 0.12  # the top of a page holds the patient's details: never drawn


def split_pages(manifest: Path) -> list[dict]:
    with open(manifest, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    if not rows:
        raise SystemExit(f"{manifest} has no test split; run `ecgdx data index` first")
    return sorted(rows, key=lambda row: row["relpath"])


def read_test_split(rows: list[dict], model: str | None, measure: bool = False) -> dict:
    from ecgdx.inference import Predictor
    from ecgdx.labels import CLASS_KEYS
    from ecgdx.signals.findings import st_elevation_of

    predictor = Predictor(model) if model else Predictor()
    if measure and not predictor.uses_measurements:
        raise SystemExit(f"--measure: model {predictor.model_version} does not weigh the ST-elevation finding")
    decided, data_mix, balanced, inputs, alone = [], [], [], [], []
    for i, row in enumerate(rows):
        st_elevation = st_elevation_of(row["path"]) if measure else None
        result = predictor.predict(row["path"], force=True, keep_input=True, explain=False,
                                   st_elevation=st_elevation)
        alone.append(CLASS_KEYS.index(predictor.with_st_elevation(result, None).label))
        decided.append(CLASS_KEYS.index(result.label))
        data_mix.append([result.probabilities[k] for k in CLASS_KEYS])
        balanced.append([result.decision_probabilities[k] for k in CLASS_KEYS])
        inputs.append(result.model_input)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(rows)} pages", file=sys.stderr, flush=True)
    return {"model_version": predictor.model_version, "metadata": predictor.metadata,
            "labels": np.array([CLASS_KEYS.index(row["label"]) for row in rows]),
            "templates": np.array([row["template"] for row in rows]),
            "decided": np.array(decided), "data_mix": np.array(data_mix), "balanced": np.array(balanced),
            "inputs": inputs, "picture_alone": np.array(alone), "measured": measure}


def _one_hot(decided: np.ndarray, n_classes: int) -> np.ndarray:
    # classification_metrics decides by argmax; a one-hot of the model's own decision makes it score
    # exactly what the model answered, whatever its decision rule.
    return np.eye(n_classes)[decided]


def markdown(read: dict, n_boot: int) -> tuple[str, dict]:
    from ecgdx.evaluation import (
        bootstrap_ci,
        classification_metrics,
        confusion_matrix,
        expected_calibration_error,
    )
    from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES

    y, decided, k = read["labels"], read["decided"], len(CLASS_KEYS)
    decision = _one_hot(decided, k)
    metrics = classification_metrics(y, decision)
    ci = bootstrap_ci(y, decision, n_boot=n_boot, seed=0)
    headline = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                "balanced_accuracy": metrics["balanced_accuracy"],
                "ece": expected_calibration_error(y, read["data_mix"]),
                "mi_sensitivity": metrics["per_class"]["mi"]["sensitivity"], "n": len(y)}

    def with_ci(name: str, value: float) -> str:
        low, high = ci[name]["low"], ci[name]["high"]
        return f"{value:.3f} ({low:.3f}–{high:.3f})"

    lines = ["### Headline", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {headline[name]:.3f} |" for name in HEADLINE]
    lines += ["", "| | value (95% CI) |", "|---|---|",
              f"| Accuracy | {with_ci('accuracy', metrics['accuracy'])} |",
              f"| Macro-F1 | {with_ci('macro_f1', metrics['macro_f1'])} |",
              f"| Balanced accuracy | {with_ci('balanced_accuracy', metrics['balanced_accuracy'])} |",
              f"| ECE of the data-prior probabilities | {headline['ece']:.3f} |", "",
              "| class | n | sensitivity (95% CI) | specificity | F1 |", "|---|---|---|---|---|"]
    for key in CLASS_KEYS:
        per = metrics["per_class"][key]
        lines.append(f"| {DISPLAY_NAMES[key]} | {int((y == CLASS_KEYS.index(key)).sum())} | "
                     f"{with_ci(f'sensitivity_{key}', per['sensitivity'])} | {per['specificity']:.3f} | "
                     f"{per['f1']:.3f} |")
    lines += ["", "| template | n | accuracy | macro-F1 | MI sensitivity |", "|---|---|---|---|---|"]
    for template in sorted(set(read["templates"])):
        mask = read["templates"] == template
        part = classification_metrics(y[mask], decision[mask])
        mi = (y[mask] == CLASS_KEYS.index("mi"))
        caught = int((decided[mask][mi] == CLASS_KEYS.index("mi")).sum())
        lines.append(f"| {template} | {int(mask.sum())} | {part['accuracy']:.3f} | {part['macro_f1']:.3f} | "
                     f"{caught}/{int(mi.sum())} |")
    matrix = confusion_matrix(y, decided, k).tolist()
    lines += ["", "Confusion matrix (rows true, columns predicted; "
              + ", ".join(DISPLAY_NAMES[key] for key in CLASS_KEYS) + f"): {matrix}", ""]
    return "\n".join(lines), headline


def check_against_metadata(headline: dict, metadata: dict) -> list[str]:
    stored = metadata.get("test_metrics") or {}
    problems = [f"{name}: pipeline {headline[name]:.4f}, metadata {stored.get(name)}"
                for name in HEADLINE if stored.get(name) is None or abs(headline[name] - stored[name]) > 0.0015]
    if stored.get("n") != headline["n"]:
        problems.append(f"pages: pipeline {headline['n']}, metadata {stored.get('n')}")
    return problems


def draw_misses(rows: list[dict], read: dict, out: Path) -> int:
    """The MI and History-of-MI test pages decided Normal; returns how many."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES

    normal = CLASS_KEYS.index("normal")
    serious = {CLASS_KEYS.index("mi"), CLASS_KEYS.index("history_of_mi")}
    misses = [i for i, (true, said) in enumerate(zip(read["labels"], read["decided"], strict=True))
              if true in serious and said == normal]
    if not misses:
        return 0
    columns = min(3, len(misses))
    fig, axes = plt.subplots(2 * ((len(misses) + columns - 1) // columns), columns,
                             figsize=(5.2 * columns, 6.4 * ((len(misses) + columns - 1) // columns)),
                             gridspec_kw={"height_ratios": [1.4, 1] * ((len(misses) + columns - 1) // columns)},
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for n, i in enumerate(misses):
        page = cv2.imread(rows[i]["path"], cv2.IMREAD_GRAYSCALE)
        page = page[int(HEADER_FRACTION * page.shape[0]):]
        top, bottom = axes[2 * (n // columns), n % columns], axes[2 * (n // columns) + 1, n % columns]
        top.imshow(page, cmap="gray", vmin=0, vmax=255)
        top.set_title(f"{Path(rows[i]['relpath']).name} ({rows[i]['template']}): true "
                      f"{DISPLAY_NAMES[CLASS_KEYS[read['labels'][i]]]}, read Normal "
                      f"({100 * read['balanced'][i, normal]:.0f} %)", color="#b00020", fontsize=9, loc="left")
        bottom.imshow(read["inputs"][i], cmap="gray", vmin=0, vmax=255)
        bottom.set_title("what the model saw (canonical page)", fontsize=8, loc="left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return len(misses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "data" / "manifest.csv")
    parser.add_argument("--model", help="ONNX model (default: the bundled one)")
    parser.add_argument("--markdown", type=Path, help="write the tables here too")
    parser.add_argument("--picture", type=Path, help="draw the MI/History-of-MI pages read as Normal")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--measure", action="store_true", help="weigh the digitised ST-elevation finding too")
    args = parser.parse_args(argv)

    rows = split_pages(args.manifest)
    read = read_test_split(rows, args.model, args.measure)
    text, headline = markdown(read, args.n_boot)
    print(f"model {read['model_version']}, {len(rows)} test pages\n")
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.picture:
        print(f"{draw_misses(rows, read, args.picture)} serious misses drawn in {args.picture}")
    if read["measured"]:
        changed = read["decided"] != read["picture_alone"]
        print(f"the ST-elevation finding changed {int(changed.sum())} of {len(rows)} decisions; not checked "
              "against the metadata's test_metrics (the picture alone)")
        return 0
    problems = check_against_metadata(headline, read["metadata"])
    for problem in problems:
        print("DIFFERS from the model's metadata:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
