"""Training: ``ecgdx train --config configs/NAME.yaml``.

A run directory holds everything needed to audit the run:
``config.yaml`` (resolved), ``history.csv``/``history.json``, ``best.pt`` (self-describing
checkpoint: model name and kwargs, class order, preprocessing spec, temperature, metrics, data
fingerprint), ``last.pt`` (for ``--resume``), ``training_curves.png`` and ``eval-test/`` (the
report on the held-out split).

Two data protocols:
- ``honest``: the manifest's duplicate-aware, (label, template)-stratified split.
- ``seed``: the original project's protocol, kept to show its leakage: every image is expanded
  offline into k augmented copies (x5 Normal, x10 MI, x10 Abnormal, x12 History of MI) and the
  copies are split at random 80/20, so near-identical copies of one ECG sit in train and test.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgdx import __version__
from ecgdx.config import ExperimentConfig, dump_config, load_config
from ecgdx.errors import ConfigError, DataError, ModelError
from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES, NUM_CLASSES

CHECKPOINT_FORMAT = "ecgdx-checkpoint/1"


@dataclass
class SplitData:
    """Preprocessed images of one split: images[i] is (H, W) uint8, labels[i] a class index."""

    images: list
    labels: np.ndarray
    templates: list[str]
    names: list[str]
    # Per image, model inputs of simulated photos of the same page (data.photo_variants), or None.
    variants: list | None = None

    def subset(self, index) -> SplitData:
        """The images at ``index`` (any sequence of ints), with their variants."""
        index = [int(i) for i in index]
        return SplitData([self.images[i] for i in index], self.labels[index], [self.templates[i] for i in index],
                         [self.names[i] for i in index],
                         None if self.variants is None else [self.variants[i] for i in index])


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data


def load_manifest_pages(cfg: ExperimentConfig) -> tuple[list, SplitData, str]:
    """(manifest rows, every page preprocessed as one SplitData in row order, data fingerprint)."""
    if not cfg.data.manifest:
        raise ConfigError("data.manifest is empty: run `ecgdx data index DIR --out manifest.csv` and set it")
    from ecgdx.data.cache import load_preprocessed
    from ecgdx.data.index import manifest_fingerprint, read_manifest

    rows = read_manifest(cfg.data.manifest)
    if not rows:
        raise DataError(f"{cfg.data.manifest} lists no images")
    images = load_preprocessed([r.path for r in rows], [r.sha256 for r in rows], cfg.preprocess, cfg.data.cache_dir)
    labels = np.asarray([CLASS_KEYS.index(r.label) for r in rows], np.int64)
    variants = None
    if cfg.data.photo_variants > 0:
        from ecgdx.data.cache import load_photo_variants

        variants = load_photo_variants([r.path for r in rows], [r.sha256 for r in rows], cfg.preprocess,
                                       cfg.data.cache_dir, cfg.data.photo_variants, seed=cfg.train.seed)
    pages = SplitData(images, labels, [r.template for r in rows], [r.relpath for r in rows], variants)
    return rows, pages, manifest_fingerprint(rows)


def load_splits(cfg: ExperimentConfig) -> tuple[dict[str, SplitData], str]:
    """Return ({"train", "val", "test"} -> SplitData, data fingerprint) for the configured protocol."""
    spec = cfg.preprocess
    size = (spec.height, spec.width)
    if cfg.data.synthetic > 0 and cfg.data.photo_variants > 0:
        raise ConfigError("data.photo_variants needs real pages (data.manifest), not data.synthetic")
    if cfg.data.protocol == "seed" and cfg.data.photo_variants > 0:
        raise ConfigError("data.photo_variants works with protocol honest only")
    if cfg.data.synthetic > 0:
        from ecgdx.data.synthetic import make_synthetic_dataset

        splits = {}
        for offset, name in enumerate(("train", "val", "test")):
            per_class = cfg.data.synthetic if name == "train" else max(2, cfg.data.synthetic // 2)
            images, labels, templates = make_synthetic_dataset(per_class, size, seed=cfg.train.seed + offset)
            splits[name] = SplitData(images, labels, templates, [f"synthetic-{name}-{i}" for i in range(len(images))])
        return splits, f"synthetic-{cfg.data.synthetic}-seed{cfg.train.seed}"

    rows, everything, fingerprint = load_manifest_pages(cfg)
    images, labels, templates, names = everything.images, everything.labels, everything.templates, everything.names

    if cfg.data.protocol == "honest":
        splits = {}
        for name in ("train", "val", "test"):
            idx = [i for i, r in enumerate(rows) if r.split == name]
            if not idx:
                raise DataError(f"{cfg.data.manifest} has no rows in split {name!r}")
            splits[name] = everything.subset(idx)
        return splits, fingerprint
    if cfg.data.protocol == "seed":
        return _seed_protocol_splits(cfg, images, labels, templates, names), fingerprint + "-seedprotocol"
    raise ConfigError(f"data.protocol must be 'honest' or 'seed', got {cfg.data.protocol!r}")


def _seed_protocol_splits(cfg, images, labels, templates, names) -> dict[str, SplitData]:
    """Reproduce the original leaky protocol: augment every image offline, then split copies at random."""
    from tqdm import tqdm

    from ecgdx.augmentation import build_augmentation

    augment = build_augmentation(cfg.augment)
    rng = np.random.default_rng(cfg.train.seed)
    out_images, out_labels, out_templates, out_names = [], [], [], []
    for image, label, template, name in tqdm(list(zip(images, labels, templates, names, strict=True)),
                                             desc="seed protocol: augmenting offline", unit="img"):
        copies = cfg.data.seed_copies.get(CLASS_KEYS[label], 1)
        for k in range(copies):
            out_images.append(image if (k == 0 or augment is None) else augment(image, rng))
            out_labels.append(label)
            out_templates.append(template)
            out_names.append(f"{name}#aug{k}")
    order = rng.permutation(len(out_images))
    n_test = int(round(cfg.data.seed_test_fraction * len(order)))
    n_val = int(round(0.1 * (len(order) - n_test)))
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    labels_arr = np.asarray(out_labels, np.int64)
    return {
        name: SplitData([out_images[i] for i in idx], labels_arr[idx], [out_templates[i] for i in idx],
                        [out_names[i] for i in idx])
        for name, idx in parts.items()
    }


def make_torch_dataset(split: SplitData, augment=None, seed: int = 0, photo_p: float = 0.0):
    """A torch Dataset yielding ((1, H, W) float32 in [0, 1], label). Augmentation seeded per (epoch, index).

    photo_p > 0: with that probability a sample is one of its page's photo variants (``split.variants``),
    chosen by its own generator, so the clean samples' augmentation stream is unchanged.
    """
    if photo_p > 0 and (split.variants is None or any(not v for v in split.variants)):
        raise ConfigError("augment.photo_p > 0 needs photo variants of every page: set data.photo_variants")
    import torch
    from torch.utils.data import Dataset

    class ImageDataset(Dataset):
        def __init__(self):
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return len(split.images)

        def __getitem__(self, index: int):
            image = split.images[index]
            if photo_p > 0:
                choice = np.random.default_rng([seed, self.epoch, index, 1])
                if choice.random() < photo_p:
                    options = split.variants[index]
                    image = options[int(choice.integers(len(options)))]
            if augment is not None:
                image = augment(image, np.random.default_rng([seed, self.epoch, index]))
            tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
            return tensor, int(split.labels[index])

    return ImageDataset()


# ----------------------------------------------------------------------------- model helpers


def predict_logits(model, images: list, batch_size: int = 32, channels_last: bool = True,
                   device: str = "cpu") -> np.ndarray:
    """Run ``model`` in eval mode over (H, W) uint8 images; returns (N, 4) float64 logits."""
    import torch

    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = np.stack(images[start:start + batch_size]).astype(np.float32)[:, None] / 255.0
            x = torch.from_numpy(batch).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            outputs.append(model(x).float().cpu().numpy())
    return np.concatenate(outputs).astype(np.float64) if outputs else np.zeros((0, NUM_CLASSES))


def load_checkpoint(path: str | Path):
    """Load a self-describing checkpoint; returns (model in eval mode, checkpoint dict)."""
    import torch

    from ecgdx.models import create_model

    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise ModelError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say so instead of a pickle trace
        raise ModelError(f"{path} is not a readable ecgdx checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not an ecgdx checkpoint (format {CHECKPOINT_FORMAT})")
    if tuple(ckpt["classes"]) != CLASS_KEYS:
        raise ModelError(f"{path} was trained with class order {ckpt['classes']}, expected {CLASS_KEYS}")
    model = create_model(ckpt["model"]["name"], **ckpt["model"]["kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


# ----------------------------------------------------------------------------- training


def recalibrate_batchnorm(model, batches, *, max_batches: int, autocast_dtype=None) -> int:
    """Recompute the running mean/variance of ``model``'s training-mode BatchNorm layers as a plain
    average over up to ``max_batches`` input batches ((N, C, H, W) tensors, or (x, y) pairs); the
    weights do not change. Layers a model keeps in eval mode (frozen stages) are left alone.
    Returns the number of layers recalibrated. Leaves the model in train mode.
    """
    import torch

    model.train()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    if not layers or max_batches <= 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # None: cumulative average over the batches seen since the reset
    device = next(model.parameters()).device
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.bfloat16,
                                         enabled=autocast_dtype is not None):
        for step, batch in enumerate(batches):
            if step >= max_batches:
                break
            x = batch[0] if isinstance(batch, tuple | list) else batch
            model(x.to(device))
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    return len(layers)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 2% of the peak learning rate."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, minlength=NUM_CLASSES)


def run_dir_for(cfg: ExperimentConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name


def train_from_config(config_path: str | Path | None, overrides: list[str] | None = None, *,
                      resume: bool = False, progress: bool = True) -> dict:
    """Train as configured; returns {"run_dir", "best_metrics", "test_report"}."""
    cfg = load_config(config_path, overrides)
    return train(cfg, resume=resume, progress=progress)


def train(cfg: ExperimentConfig, *, resume: bool = False, progress: bool = True,
          splits: dict[str, SplitData] | None = None, fingerprint: str | None = None,
          run_dir: Path | None = None, final_evaluation: bool = True) -> dict:
    """Train one model as configured and return {"run_dir", "best_val_macro_f1", "test_report"}.

    ``splits``/``fingerprint`` replace the configured data (cross-validation passes each fold's
    pages); ``run_dir`` replaces ``out_dir/name``. ``final_evaluation=False`` skips the temperature
    fit on validation and the test report (cross-validation calibrates on out-of-fold predictions).
    """
    import torch
    from torch.utils.data import DataLoader, WeightedRandomSampler
    from tqdm import tqdm

    from ecgdx.augmentation import build_augmentation
    from ecgdx.evaluation import classification_metrics, plot_training_curves, softmax
    from ecgdx.models import count_parameters, create_model

    tc = cfg.train
    if tc.precision not in ("fp32", "bf16"):
        raise ConfigError(f"train.precision must be fp32 or bf16, got {tc.precision!r}")
    if tc.select not in ("best_val", "last"):
        raise ConfigError(f"train.select must be best_val or last, got {tc.select!r}")
    if tc.balance not in ("sampler", "class_weights", "none"):
        raise ConfigError(f"train.balance must be sampler, class_weights or none, got {tc.balance!r}")
    if tc.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available; use --set train.device=cpu")
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    seed_everything(tc.seed)
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(cfg)
    if run_dir.exists() and (run_dir / "last.pt").exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; use --resume, or set name=... for a new run")
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")

    if splits is None:
        splits, fingerprint = load_splits(cfg)
    spec = cfg.preprocess
    counts = _class_counts(splits["train"].labels)
    if (counts == 0).any():
        missing = [CLASS_KEYS[i] for i in np.flatnonzero(counts == 0)]
        raise DataError(f"the training split has no images of {', '.join(missing)}")
    print(f"[{cfg.name}] train {len(splits['train'].labels)} / val {len(splits['val'].labels)} / "
          f"test {len(splits['test'].labels)} images; train class counts {dict(zip(CLASS_KEYS, counts.tolist(), strict=True))}")

    model = create_model(cfg.model.name, pretrained=cfg.model.pretrained, **cfg.model.kwargs) \
        if cfg.model.pretrained else create_model(cfg.model.name, **cfg.model.kwargs)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model = model.to(tc.device).to(memory_format=memory_format)

    augment = build_augmentation(cfg.augment)
    train_set = make_torch_dataset(splits["train"], augment, seed=tc.seed, photo_p=cfg.augment.photo_p)

    def training_loader(generator):
        if tc.balance == "sampler":
            weights = 1.0 / counts[splits["train"].labels]
            sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(weights),
                                            replacement=True, generator=generator)
            loader_kwargs = {"sampler": sampler}
        else:
            loader_kwargs = {"shuffle": True, "generator": generator}
        return DataLoader(train_set, batch_size=tc.batch_size, num_workers=tc.num_workers, drop_last=True,
                          **loader_kwargs)

    generator = torch.Generator().manual_seed(tc.seed)
    loader = training_loader(generator)
    class_weights = None
    if tc.balance == "class_weights":
        class_weights = torch.as_tensor(counts.sum() / (NUM_CLASSES * counts), dtype=torch.float32).to(tc.device)
    criterion = torch.nn.CrossEntropyLoss(weight=class_weights, label_smoothing=tc.label_smoothing)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tc.lr,
                                  weight_decay=tc.weight_decay)
    steps_per_epoch = len(loader) if tc.max_batches_per_epoch <= 0 else min(len(loader), tc.max_batches_per_epoch)
    if steps_per_epoch == 0:
        raise DataError(f"training split smaller than one batch ({tc.batch_size}); lower train.batch_size")
    total_steps = steps_per_epoch * tc.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total_steps, tc.warmup_epochs * steps_per_epoch))

    history: list[dict] = []
    start_epoch, best_f1, best_epoch, stale = 0, -1.0, -1, 0
    if resume and (run_dir / "last.pt").exists():
        state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best_f1, best_epoch, stale = state["history"], state["best_f1"], state["best_epoch"], state["stale"]
        start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["sampler_rng"])
        print(f"[{cfg.name}] resuming after epoch {state['epoch']} (best val macro-F1 {best_f1:.3f})")

    def checkpoint_payload(extra: dict) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "ecgdx_version": __version__,
            "model": {"name": cfg.model.name, "kwargs": dict(cfg.model.kwargs)},
            "pretrained_source": cfg.model.pretrained,
            "classes": list(CLASS_KEYS),
            "display_names": dict(DISPLAY_NAMES),
            "preprocess": spec.to_dict(),
            "config": cfg.to_dict(),
            "data_fingerprint": fingerprint,
            "parameters": count_parameters(model),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            **extra,
        }

    for epoch in range(start_epoch, tc.epochs):
        if tc.select == "best_val" and stale >= tc.early_stopping_patience > 0:
            print(f"[{cfg.name}] early stopping: no val macro-F1 gain for {stale} epochs")
            break
        model.train()
        train_set.set_epoch(epoch)
        t0 = time.perf_counter()
        losses, seen = [], 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch",
                   disable=not progress, leave=False)
        for step, (x, y) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            x = x.to(tc.device).contiguous(memory_format=memory_format)
            y = y.to(tc.device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=tc.device.split(":")[0], dtype=torch.bfloat16,
                                enabled=tc.precision == "bf16"):
                logits = model(x)
            loss = criterion(logits.float(), y)
            if not torch.isfinite(loss):
                raise ModelError(f"training diverged (loss {loss.item()}) at epoch {epoch + 1}; lower train.lr")
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            seen += len(y)
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", img_s=f"{seen / (time.perf_counter() - t0):.1f}")
            bar.update(1)
        bar.close()
        train_seconds = time.perf_counter() - t0
        if tc.bn_recalibration_batches > 0:
            # Its own sampler seed per epoch, so recalibrating leaves the training stream (and resume)
            # exactly as without it.
            global_rng = torch.get_rng_state()  # the DataLoader draws its worker seed from it
            recal_loader = training_loader(torch.Generator().manual_seed(tc.seed * 1000 + epoch + 1))
            recalibrate_batchnorm(
                model, ((x.contiguous(memory_format=memory_format), y) for x, y in recal_loader),
                max_batches=tc.bn_recalibration_batches,
                autocast_dtype=torch.bfloat16 if tc.precision == "bf16" else None)
            torch.set_rng_state(global_rng)
        val_logits = predict_logits(model, splits["val"].images, channels_last=tc.channels_last, device=tc.device)
        val_metrics = classification_metrics(splits["val"].labels, softmax(val_logits))
        val_loss = float(criterion(torch.as_tensor(val_logits, dtype=torch.float32).to(tc.device),
                                   torch.as_tensor(splits["val"].labels).to(tc.device)).item())
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_accuracy": val_metrics["accuracy"],
            "val_macro_f1": val_metrics["macro_f1"] or 0.0,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": train_seconds,
            "images_per_second": seen / train_seconds,
        }
        history.append(row)
        improved = row["val_macro_f1"] > best_f1
        if improved:
            best_f1, best_epoch, stale = row["val_macro_f1"], epoch + 1, 0
        else:
            stale += 1
        # "last" keeps the final epoch whatever validation says: the validation pages may be the
        # held-out fold of a cross-validation, which must not choose the checkpoint.
        if improved or tc.select == "last":
            torch.save(checkpoint_payload({"epoch": epoch + 1, "val_metrics": val_metrics}), run_dir / "best.pt")
        print(f"[{cfg.name}] epoch {epoch + 1}: train loss {row['train_loss']:.3f}, val loss {val_loss:.3f}, "
              f"val macro-F1 {row['val_macro_f1']:.3f}{' (best)' if improved else ''}, "
              f"{row['images_per_second']:.1f} img/s, {train_seconds:.0f} s")
        torch.save({
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history, "best_f1": best_f1,
            "best_epoch": best_epoch, "stale": stale, "torch_rng": torch.get_rng_state(),
            "sampler_rng": generator.get_state(),
        }, run_dir / "last.pt")
        _write_history(history, run_dir)

    if not (run_dir / "best.pt").exists():
        raise ModelError("training finished without a checkpoint (zero epochs?)")
    plot_training_curves(history, run_dir / "training_curves.png")
    if not final_evaluation:
        return {"run_dir": run_dir, "best_val_macro_f1": best_f1, "test_report": None}

    # Calibrate on validation, then report on the held-out test split.
    model, ckpt = load_checkpoint(run_dir / "best.pt")
    model = model.to(tc.device).to(memory_format=memory_format)
    from ecgdx.evaluation import fit_temperature

    val_logits = predict_logits(model, splits["val"].images, channels_last=tc.channels_last, device=tc.device)
    temperature = fit_temperature(val_logits, splits["val"].labels)
    ckpt["temperature"] = float(temperature)
    ckpt["best_epoch"] = best_epoch
    test_report = evaluate_split(model, splits["test"], temperature, run_dir / "eval-test",
                                 title=f"{cfg.name}: {cfg.model.name} on the {cfg.data.protocol} test split",
                                 channels_last=tc.channels_last, device=tc.device)
    ckpt["test_metrics"] = _headline(test_report)
    torch.save(ckpt, run_dir / "best.pt")
    return {"run_dir": run_dir, "best_val_macro_f1": best_f1, "test_report": test_report}


def _write_history(history: list[dict], run_dir: Path) -> None:
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    with open(run_dir / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _headline(report: dict) -> dict:
    """The handful of numbers a checkpoint and a model card carry."""
    overall = report["overall"]
    metrics = overall.get("metrics", overall)
    keep = ("accuracy", "macro_f1", "ece", "balanced_accuracy")
    out = {k: metrics.get(k) for k in keep}
    out["n"] = report.get("n")
    per_class = metrics.get("per_class", {})
    if "mi" in per_class:
        out["mi_sensitivity"] = per_class["mi"].get("recall")
    return out


def evaluate_split(model, split: SplitData, temperature: float | None, out_dir: Path, *, title: str,
                   channels_last: bool = True, device: str = "cpu", n_boot: int = 1000) -> dict:
    """Evaluate ``model`` on a split, per template too, and write report.json/.md and plots to ``out_dir``."""
    from ecgdx.evaluation import evaluate_predictions, write_report

    logits = predict_logits(model, split.images, channels_last=channels_last, device=device)
    report = evaluate_predictions(split.labels, logits, groups=np.asarray(split.templates), temperature=temperature,
                                  n_boot=n_boot, seed=0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "predictions.npz", logits=logits, labels=split.labels, templates=np.asarray(split.templates),
             names=np.asarray(split.names))
    write_report(report, out_dir, title=title)
    return report


# ----------------------------------------------------------------------------- evaluate / compare commands


def evaluate_command(run: str, *, manifest: str | None, split: str, out: str | None, n_boot: int = 1000) -> int:
    from ecgdx.config import from_dict

    model, ckpt = load_checkpoint(run)
    cfg = from_dict(ExperimentConfig, ckpt["config"])
    if manifest:
        cfg.data.manifest = manifest
        cfg.data.synthetic = 0
        cfg.data.protocol = "honest"
    splits, _ = load_splits(cfg)
    run_path = Path(run) if Path(run).is_dir() else Path(run).parent
    out_dir = Path(out) if out else run_path / f"eval-{split}"
    report = evaluate_split(model.to(memory_format=_cl()), splits[split], ckpt.get("temperature"), out_dir,
                            title=f"{cfg.name}: {cfg.model.name} on split '{split}'", n_boot=n_boot)
    head = _headline(report)
    print(f"{cfg.name} on {split} (n={head['n']}): accuracy {_fmt(head['accuracy'])}, "
          f"macro-F1 {_fmt(head['macro_f1'])}, MI sensitivity {_fmt(head.get('mi_sensitivity'))}, "
          f"ECE {_fmt(head['ece'])}")
    print(f"report: {out_dir / 'report.md'}")
    return 0


def _cl():
    import torch

    return torch.channels_last


def cpu_ms_per_image(model, size: tuple[int, int], repeats: int = 20) -> float:
    """Median CPU latency of one image (batch 1) through the torch model on ONE thread, in milliseconds.

    One thread, because the number is compared across models and a second thread on a busy 2-core
    machine measures scheduling rather than the model.
    """
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.eval()
    x = torch.rand(1, 1, *size).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            t0 = time.perf_counter()
            model(x)
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1000)
    torch.set_num_threads(previous_threads)
    return float(np.median(times))


def compare_command(runs: list[str], out: str | None = None) -> int:
    from ecgdx.models import estimate_macs

    rows = []
    majority = None
    for run in runs:
        run_path = Path(run)
        report_path = run_path / "eval-test" / "report.json"
        if not report_path.is_file():
            raise DataError(f"{run}: no eval-test/report.json; train it or run `ecgdx evaluate {run}` first")
        report = json.loads(report_path.read_text())
        model, ckpt = load_checkpoint(run_path)
        size = (ckpt["preprocess"]["height"], ckpt["preprocess"]["width"])
        overall = report["overall"]
        ci = overall.get("ci", {})
        per_group = report.get("per_group", {})
        rows.append({
            "run": run_path.name,
            "model": ckpt["model"]["name"],
            "pretrained": "ImageNet" if ckpt.get("pretrained_source") else "scratch",
            "input": f"{size[0]}x{size[1]}",
            "params": ckpt["parameters"],
            "gmacs": estimate_macs(model, (1, 1, *size)) / 1e9,
            "cpu_ms": cpu_ms_per_image(model, size),
            "accuracy": overall["metrics"]["accuracy"],
            "macro_f1": overall["metrics"]["macro_f1"],
            "f1_ci": ci.get("macro_f1"),
            "mi_sens": overall["metrics"]["per_class"]["mi"]["recall"],
            "ece": report["calibration"].get("ece_after"),
            "f1_3x4": per_group.get("3x4_grid", {}).get("metrics", {}).get("macro_f1"),
            "f1_6x2": per_group.get("6x2_nogrid", {}).get("metrics", {}).get("macro_f1"),
            "protocol": ckpt["config"]["data"]["protocol"],
        })
        if majority is None and ckpt["config"]["data"]["protocol"] == "honest" and ckpt["config"]["data"]["manifest"]:
            majority = _majority_row(ckpt["config"]["data"]["manifest"])
    table = _markdown_table(rows, majority)
    print(table)
    if out:
        Path(out).write_text(table + "\n")
    return 0


def _majority_row(manifest: str) -> dict | None:
    from ecgdx.data.index import read_manifest
    from ecgdx.evaluation import majority_baseline

    try:
        rows = read_manifest(manifest)
    except (DataError, OSError):
        return None
    y_train = np.asarray([CLASS_KEYS.index(r.label) for r in rows if r.split == "train"])
    test = [r for r in rows if r.split == "test"]
    y_test = np.asarray([CLASS_KEYS.index(r.label) for r in test])
    metrics = majority_baseline(y_train, y_test)
    templates = np.asarray([r.template for r in test])
    per = {}
    for template in ("3x4_grid", "6x2_nogrid"):
        mask = templates == template
        if mask.any():
            per[template] = majority_baseline(y_train, y_test[mask])["macro_f1"]
    return {"run": "majority class", "model": "baseline", "pretrained": "-", "input": "-", "params": 0, "gmacs": 0.0,
            "cpu_ms": 0.0, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "f1_ci": None,
            "mi_sens": metrics["per_class"]["mi"]["recall"], "ece": None, "f1_3x4": per.get("3x4_grid"),
            "f1_6x2": per.get("6x2_nogrid"), "protocol": "honest"}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        return f"{value['value']:.{digits}f} ({value['low']:.{digits}f}–{value['high']:.{digits}f})"
    return f"{value:.{digits}f}"


def _markdown_table(rows: list[dict], majority: dict | None) -> str:
    header = ("| run | model | weights | input | params | GMACs | CPU ms/img (1 thread) | protocol | accuracy | "
              "macro-F1 (95% CI) | MI sens. | ECE (T-scaled) | macro-F1 3x4_grid | macro-F1 6x2_nogrid |")
    lines = [header, "|" + "---|" * 14]
    for row in rows + ([majority] if majority else []):
        f1 = _fmt(row["f1_ci"]) if row["f1_ci"] else _fmt(row["macro_f1"])
        lines.append(
            f"| {row['run']} | {row['model']} | {row['pretrained']} | {row['input']} | {row['params']:,} | "
            f"{row['gmacs']:.2f} | {row['cpu_ms']:.1f} | {row['protocol']} | {_fmt(row['accuracy'])} | {f1} | "
            f"{_fmt(row['mi_sens'])} | {_fmt(row['ece'])} | {_fmt(row['f1_3x4'])} | {_fmt(row['f1_6x2'])} |"
        )
    return "\n".join(lines)
