"""The ``ecgdx`` command line. ``main(argv)`` is what tests call.

Each subcommand imports its heavy dependencies (torch, matplotlib, onnxruntime) only when
it runs, so ``ecgdx --help`` and the torch-free commands stay fast.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

from ecgdx import __version__
from ecgdx.errors import EcgdxError


def _train(args: argparse.Namespace) -> int:
    from ecgdx.training import train_from_config

    result = train_from_config(args.config, args.overrides, resume=args.resume)
    print(f"run directory: {result['run_dir']}")
    return 0


def _cv(args: argparse.Namespace) -> int:
    from ecgdx.config import load_config
    from ecgdx.cv import cross_validate

    cross_validate(load_config(args.config, args.overrides), folds=args.folds, fold_seed=args.fold_seed,
                   test_fold=args.test_fold, n_boot=args.n_boot)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ecgdx.training import evaluate_command

    return evaluate_command(args.run, manifest=args.data, split=args.split, out=args.out, n_boot=args.n_boot)


def _compare(args: argparse.Namespace) -> int:
    from ecgdx.training import compare_command

    return compare_command(args.runs, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecgdx", description="Diagnose 12-lead ECG printouts from images (research tool, not a medical device)."
    )
    parser.add_argument("--version", action="version", version=f"ecgdx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from ecgdx.data import commands as data_commands

    data_commands.register(sub)

    from ecgdx import predict as predict_commands  # predict, export, model info (stdlib imports only)

    predict_commands.register(sub)

    from ecgdx.signals import (
        commands as signal_commands,  # render, render-dataset, digitize (stdlib imports only)
    )

    signal_commands.register(sub)

    train = sub.add_parser("train", help="train a classifier from a YAML config")
    train.add_argument("--config", required=True, help="YAML experiment config, e.g. configs/honest.yaml")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable; unknown keys are errors)",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in the config's run directory")
    train.set_defaults(func=_train)

    cv = sub.add_parser("cv", help="k-fold cross-validation over all pages of a manifest (resumable)")
    cv.add_argument("--config", required=True, help="YAML experiment config, e.g. configs/cv-efficientnet_lite0.yaml")
    cv.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable; unknown keys are errors)",
    )
    cv.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    cv.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    cv.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for 95%% CIs")
    cv.add_argument(
        "--no-test-fold", dest="test_fold", action="store_false",
        help="deal all pages into folds (default: fold 0 is the manifest's test split, so the fold-0 model "
             "is the train+val model and its predictions are the test split's last check)",
    )
    cv.set_defaults(func=_cv)

    evaluate = sub.add_parser("evaluate", help="evaluate a trained run or checkpoint on a manifest split")
    evaluate.add_argument("run", help="run directory or checkpoint file (.pt)")
    evaluate.add_argument("--data", help="manifest CSV (default: the one the run was trained on)")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--out", help="output folder (default: RUN/eval-SPLIT)")
    evaluate.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for 95%% CIs")
    evaluate.set_defaults(func=_evaluate)

    compare = sub.add_parser("compare", help="one markdown table comparing evaluated runs")
    compare.add_argument("runs", nargs="+", help="run directories")
    compare.add_argument("--out", help="write the table to this markdown file as well")
    compare.set_defaults(func=_compare)

    from ecgdx import serve as serve_commands  # the web app (stdlib imports only; Django when it runs)

    serve_commands.register(sub)
    return parser


def _reexec_with_tcmalloc(argv: list[str]) -> None:
    """Restart this process with tcmalloc preloaded: CPU training steps are 2-4x faster and steadier.

    Only for ``ecgdx train`` and ``ecgdx cv`` started from a shell (never when tests call ``main(argv)``), only when
    Debian's libtcmalloc-minimal4 is installed, and never twice. ECGDX_NO_TCMALLOC=1 turns it off.
    """
    preload = os.environ.get("LD_PRELOAD", "")
    if os.environ.get("ECGDX_NO_TCMALLOC") or "tcmalloc" in preload:
        return
    libraries = sorted(glob.glob("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4"))
    if not libraries:
        print("ecgdx: note: libtcmalloc-minimal4 is not installed; CPU training may be 2-4x slower "
              "(apt-get install libtcmalloc-minimal4)", file=sys.stderr)
        return
    env = dict(os.environ, LD_PRELOAD=f"{libraries[0]} {preload}".strip())
    os.execve(sys.executable, [sys.executable, "-m", "ecgdx", *argv], env)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    from_shell = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if from_shell and args.command in ("train", "cv"):
        _reexec_with_tcmalloc(argv)
    try:
        return int(args.func(args) or 0)
    except EcgdxError as exc:
        print(f"ecgdx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ecgdx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
