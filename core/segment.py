"""Mask faithfulness of label-conditioned generation: Dice between a condition and a segmentation of the image.

TotalSegmentator-free. HU thresholds were considered and rejected as the main measure:
on a contrast CT the organ classes (liver, spleen, kidney, pancreas, bowel wall, muscle,
enhanced vessels) all sit between about 30 and 250 HU and overlap, so thresholds only
separate air, fat/body, lung and bone. Instead a small segmenter (MONAI ``BasicUNet``,
2D) is trained by ``train_segmenter`` on the same real canvases and classes the
generators learn from (held-out sources excluded), with noise and intensity-shift
augmentation so it reads layout rather than one scanner's texture. Its Dice on held-out
*real* canvases is reported beside the Dice on generated ones: the ceiling a perfectly
faithful generator could reach with this segmenter.

    seg = Segmenter("runs/ct-segmenter/model")
    pred = seg(hu_images)                                    # (N, 64, 64) class ids
    scores = faithfulness(conditions, pred, class_names)      # mean and per-class Dice

Train it with ``python -m core.segment CONFIG.json`` (a ``SegmenterConfig``) or through
``bench/controlnet_report.py``, which trains it when missing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.training.label_config import LabelDataConfig
from core.training.loop import LoopSettings

WINDOWS = ((-1000.0, 1000.0), (-160.0, 240.0))  # input channels: wide and soft-tissue, each to [-1, 1]
NOT_SCORED = ("air", "body")  # present on every canvas and trivially right: reported apart


@dataclass(frozen=True)
class SegmenterConfig(LoopSettings):
    """One segmenter training run (a ``core.training.loop`` run; its fields: ``LoopSettings``)."""

    out_dir: str = "runs/ct-segmenter"
    data: LabelDataConfig = field(default_factory=LabelDataConfig)
    resolution: int = 64
    features: tuple[int, ...] = (16, 32, 48, 64, 96, 16)  # BasicUNet features (5 levels + the last decoder)
    noise_hu: float = 40.0  # augmentation: Gaussian noise with std up to this (HU)
    shift_hu: float = 25.0  # augmentation: global intensity shift up to +- this (HU)
    steps: int = 800
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    lr_schedule: str = "cosine"
    ema_decay: float = 0.0
    sample_every: int = 200
    checkpoint_every: int = 200
    keep_checkpoints: int = 1


def to_input(hu: np.ndarray):
    """``(N, H, W)`` HU -> ``(N, 2, H, W)`` float32 tensor (the two ``WINDOWS``)."""
    import torch

    hu = np.asarray(hu, np.float32)
    chans = [np.clip((hu - lo) / (hi - lo) * 2 - 1, -1, 1) for lo, hi in WINDOWS]
    return torch.from_numpy(np.stack(chans, axis=1))


def build(n_classes: int, features: tuple[int, ...]):
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=2, in_channels=len(WINDOWS), out_channels=n_classes, features=tuple(features)
    )


def dice_per_class(pred: np.ndarray, target: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    """Dice per class over a batch, pooled over all images (pixels where ``target`` is 0 = free are ignored).

    Classes absent from both are left out; ids are 1-based as in class maps.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise InputError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    scored = target > 0
    out = {}
    for k, name in enumerate(class_names, start=1):
        p, t = (pred == k) & scored, target == k
        denom = int(p.sum() + t.sum())
        if denom:
            out[name] = round(2.0 * float((p & t).sum()) / denom, 4)
    return out


def faithfulness(conditions: np.ndarray, segmented: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Dice between condition class maps and segmentations of the generated images.

    Returns:
        ``{"dice_mean": mean over anatomical classes (not air/body), "dice_air_body": mean over
        air and body, "dice": {class: Dice}}``.
    """
    per = dice_per_class(segmented, conditions, class_names)
    organs = [v for k, v in per.items() if k not in NOT_SCORED]
    trivial = [v for k, v in per.items() if k in NOT_SCORED]
    return {
        "dice_mean": round(float(np.mean(organs)), 4) if organs else None,
        "dice_air_body": round(float(np.mean(trivial)), 4) if trivial else None,
        "dice": per,
    }


class Segmenter:
    """A trained segmenter folder (``model.safetensors`` + ``model_card.json``)."""

    def __init__(self, folder: str | Path, *, batch_size: int = 64):
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "model.safetensors").is_file() or not (folder / "model_card.json").is_file():
            raise InputError(
                f"{folder}: no segmenter (model.safetensors + model_card.json); train one with `python -m core.segment CONFIG.json`"
            )
        self.card = json.loads((folder / "model_card.json").read_text())
        self.classes = tuple(self.card["classes"])
        self.net = build(len(self.classes), tuple(self.card["features"]))
        self.net.load_state_dict(load_file(str(folder / "model.safetensors")))
        self.net.eval()
        self.batch_size = batch_size

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` HU -> ``(N, H, W)`` uint8 class ids (1-based)."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(hu), self.batch_size):
                out.append(
                    self.net(to_input(hu[i : i + self.batch_size])).argmax(1).numpy().astype(np.uint8) + 1
                )
        return np.concatenate(out)


class SegmenterTask:
    """``core.training.loop.Task``: cross-entropy on real canvases, free and invalid pixels ignored."""

    description = "train segmenter"

    def __init__(self, config: SegmenterConfig):
        from dataclasses import replace

        from core.training.label_data import load_examples

        self.config = config
        data = replace(config.data, free_body_p=0.0, drop_class_p=0.0)  # targets are the true classes
        self.classes = tuple(data.classes)
        self.data = load_examples(data, resolution=config.resolution, seed=config.seed)
        held = (
            load_examples(data, resolution=config.resolution, seed=config.seed, holdout=True)
            if data.holdout
            else self.data
        )
        self.val = [held.example(k) for k in range(len(held.slices)) if not held.slices[k].partial] or [
            held.example(k) for k in range(len(held.slices))
        ]
        self.low, self.high = data.hu_range

    def build(self, device):
        return build(len(self.classes), self.config.features)

    def dataset(self):
        return self.data

    def summary(self) -> str:
        return f"{len(self.data.slices)} training canvases, {len(self.val)} held-out real canvases, {len(self.classes)} classes"

    def targets(self, batch):

        control, valid = batch["control"], batch["valid"][:, 0]
        t = control.argmax(1)
        t[(control.sum(1) == 0) | (valid == 0)] = -1  # free or beyond the slice: not scored
        return t.long()

    def loss(self, net, batch: dict, gen, device):
        import torch
        import torch.nn.functional as F

        hu = (batch["image"][:, 0] + 1) / 2 * (self.high - self.low) + self.low  # (b, r, r) HU
        n = hu.shape[0]
        sigma = torch.rand(n, 1, 1, generator=gen) * self.config.noise_hu
        shift = (torch.rand(n, 1, 1, generator=gen) * 2 - 1) * self.config.shift_hu
        hu = hu + shift + sigma * torch.randn(hu.shape, generator=gen)
        logits = net(to_input(hu.numpy()).to(device))
        return F.cross_entropy(logits, self.targets(batch).to(device), ignore_index=-1)

    def validate(self, net, step: int, png: Path, device) -> dict:
        from PIL import Image

        from core.normalization import denormalize_hu
        from core.pipelines.label_condition import render_classes
        from core.windowing import apply_window

        hu = np.stack([denormalize_hu(it["image"][0], low=self.low, high=self.high) for it in self.val])
        import torch

        with torch.no_grad():
            pred = net(to_input(hu).to(device)).argmax(1).cpu().numpy().astype(np.uint8) + 1
        truth = np.stack(
            [
                ((it["control"].argmax(0) + 1) * (it["control"].sum(0) > 0) * (it["valid"][0] > 0)).astype(
                    np.uint8
                )
                for it in self.val
            ]
        )
        scores = faithfulness(truth, pred, self.classes)
        rows = [np.concatenate([np.repeat(apply_window(h, low=-160, high=240)[..., None], 3, -1), render_classes(p, self.classes), render_classes(t, self.classes)], 1)
                for h, p, t in list(zip(hu, pred, truth))[:: max(1, len(hu) // 6)][:6]]  # fmt: skip
        Image.fromarray(np.concatenate(rows, 0)).save(png)
        return {
            "val_dice_mean": scores["dice_mean"],
            "val_dice_air_body": scores["dice_air_body"],
            "val_dice": scores["dice"],
        }

    def export(self, net, info, out: Path) -> None:
        from safetensors.torch import save_file

        from core.training.config import to_dict
        from core.training.export import code_version, machine
        from core.training.loop import config_history

        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
        card = {
            "name": "synthdx CT faithfulness segmenter", "architecture": "monai.networks.nets.BasicUNet (2D)",
            "features": list(self.config.features), "classes": list(self.classes), "input_windows_hu": [list(w) for w in WINDOWS],
            "resolution": self.config.resolution, "pixel_mm": self.config.data.pixel_mm,
            "purpose": "Dice between a generator's condition and a segmentation of its output (core.segment)",
            "training": {"steps": info.step, "wall_time_s": round(info.wall_time_s, 1), "machine": machine(), "n_parameters": info.n_parameters,
                         "data": [{"name": s.name, "licence": s.licence} for s in self.config.data.sources if s.name not in self.config.data.holdout],
                         "holdout": list(self.config.data.holdout), "config": to_dict(self.config),
                         "earlier_phases": config_history(self.config.out_dir)},
            "metrics": {"held_out_real": info.metrics}, "code_version": code_version(),
        }  # fmt: skip
        (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")


def train_segmenter(config: SegmenterConfig, *, progress: bool = True) -> Path:
    """Train (or resume) the segmenter; returns ``<out_dir>/model``."""
    from core.training.label_config import validate_data
    from core.training.loop import run_loop

    validate_data(config.data)
    return run_loop(SegmenterTask(config), config, progress=progress)


def main(argv: list[str] | None = None) -> int:
    """``python -m core.segment CONFIG.json`` (a ``SegmenterConfig``)."""
    from core.training.label_config import load

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.segment CONFIG.json", file=sys.stderr)
        return 2
    print(train_segmenter(load(SegmenterConfig, args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
