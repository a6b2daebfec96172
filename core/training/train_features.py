"""Train the CT feature network used for FID/KID on CT crops (``assets/models/ct-features``).

Task: contrastive learning (SimCLR's NT-Xent loss) where the two views of a pair are the
same 64x64 in-plane crop on **neighbouring axial slices** (z and z +/- 1), each shifted by
up to a few pixels, with a little HU scale/offset jitter. Why this task: we have no labels
that cover the data (organ masks exist for one volume only) and too few volumes for a
supervised classifier, while every slice pair is a free positive. Neighbouring slices differ
in anatomy detail and carry independent noise, so the features must describe what a crop
shows (tissue, structure, noise texture) and cannot key on pixel identity; no blur or noise
augmentation is used, so the features stay sensitive to both, as a FID network must be.
The encoder (``core.metrics.ct_encoder``) is kept; the projection head is discarded.

Data: every axial slice of the real CT in ``../shared/data`` (TotalSegmentator example CT
and DICOM series; IBSI soft-tissue-sarcoma CT) except the held-out cases, which give the
validation figures written to the model card.

Run (about 25 minutes on one CPU thread; writes model.safetensors + model_card.json):

    python -m core.training.train_features --out assets/models/ct-features

Smoke run (seconds):

    python -m core.training.train_features --steps 2 --batch-pairs 8 --val-pairs 16 --out /tmp/ctf
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]

# Data sources with their licences, as written to the model card (see ../shared/data/README.md).
SOURCES = {
    "totalseg": "TotalSegmentator test fixtures (Wasserthal et al. 2023); CC BY 4.0",
    "ibsi_sts": "IBSI STS CT, from TCIA Soft-tissue-Sarcoma (Vallieres et al. 2015); CC BY 3.0",
}


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str = str(REPO.parent / "shared" / "data")
    out_dir: str = str(REPO / "assets" / "models" / "ct-features")
    # Validation only: the inpainting demo's held-out cases (recipes/ct_inpaint_demo.json) plus one,
    # so inpainting benchmarks on them use features that never saw those cases either.
    held_out: tuple[str, ...] = (
        "ibsi_sts/STS_019", "ibsi_sts/STS_024", "ibsi_sts/STS_032", "ibsi_sts/STS_035"
    )
    seed: int = 0
    steps: int = 500  # optimiser steps
    batch_pairs: int = 96  # positive pairs per step; 2 * batch_pairs - 2 negatives per anchor
    lr: float = 2e-3  # AdamW peak learning rate, cosine decay to lr / 20
    warmup: int = 30  # linear warm-up steps
    weight_decay: float = 1e-4
    temperature: float = 0.2  # NT-Xent temperature
    max_shift: int = 8  # pixels of independent in-plane shift between the two views
    max_dz: int = 2  # the two views are 1..max_dz slices apart
    hu_offset: float = 15.0  # +/- HU offset jitter per view (so the mean HU alone is no shortcut)
    hu_scale: float = 0.03  # +/- relative HU scale jitter per view
    min_body: float = 0.3  # minimum fraction of a crop above -500 HU (skip crops of air)
    val_pairs: int = 256  # held-out pairs for retrieval accuracy (chance = 1 / val_pairs)
    eval_every: int = 50
    threads: int = 1  # other agents share this CPU
    encoder: dict = field(default_factory=dict)  # CTEncoderConfig overrides


def load_corpus(data_dir: Path) -> dict[str, np.ndarray]:
    """name -> ``(z, y, x)`` float32 HU for every CT volume under ``data_dir/ct``."""
    from core.io.load import load_volume

    paths = {
        "totalseg/example_ct": data_dir / "ct/totalseg/example_ct.nii.gz",
        "totalseg/example_ct_dicom": data_dir / "ct/totalseg/example_ct_dicom",
    }
    for case in sorted((data_dir / "ct/ibsi_sts").glob("STS_*")):
        paths[f"ibsi_sts/{case.name}"] = case / "CT_image.nii.gz"
    return {name: load_volume(path).array for name, path in paths.items()}


def _crop_site(volumes: list[np.ndarray], size: int, margin: int, min_body: float, rng: np.random.Generator):
    """A random (volume, z, y, x) whose ``size`` crop is at least ``min_body`` above -500 HU."""
    weights = np.array([v.shape[0] for v in volumes], float)
    for _ in range(50):  # resample crops that are mostly air
        vol = volumes[rng.choice(len(volumes), p=weights / weights.sum())]
        z = int(rng.integers(vol.shape[0]))
        y = int(rng.integers(margin, vol.shape[1] - size - margin + 1))
        x = int(rng.integers(margin, vol.shape[2] - size - margin + 1))
        if (vol[z, y : y + size, x : x + size] > -500).mean() >= min_body:
            break
    return vol, z, y, x


def sample_crops(volumes: list[np.ndarray], n: int, size: int, min_body: float, rng: np.random.Generator):
    """``(n, size, size)`` raw HU crops at random places (no augmentation)."""
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        vol, z, y, x = _crop_site(volumes, size, 0, min_body, rng)
        out[i] = vol[z, y : y + size, x : x + size]
    return out


def sample_pairs(
    volumes: list[np.ndarray], n: int, size: int, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positive pairs of ``(size, size)`` HU crops: same place, neighbouring slices."""
    a, b = np.empty((n, size, size), np.float32), np.empty((n, size, size), np.float32)
    s = cfg.max_shift
    for i in range(n):
        vol, z, y, x = _crop_site(volumes, size, s, cfg.min_body, rng)
        dz = int(rng.integers(1, cfg.max_dz + 1)) * int(rng.choice([-1, 1]))
        dz = dz if 0 <= z + dz < vol.shape[0] else -dz
        dy, dx = rng.integers(-s, s + 1, size=2)
        views = (vol[z, y : y + size, x : x + size],
                 vol[z + dz, y + dy : y + dy + size, x + dx : x + dx + size])
        for out, crop in zip((a, b), views):
            crop = np.rot90(crop, int(rng.integers(4)))  # independent dihedral transform per view
            crop = crop[:, ::-1] if rng.integers(2) else crop
            scale = 1.0 + rng.uniform(-cfg.hu_scale, cfg.hu_scale)
            out[i] = crop * scale + rng.uniform(-cfg.hu_offset, cfg.hu_offset)
    return a, b


def nt_xent(z: "torch.Tensor", temperature: float) -> "torch.Tensor":  # noqa: F821
    """SimCLR loss of ``(2n, d)`` embeddings where rows i and i + n are a positive pair."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(z, dim=1)
    n = z.shape[0] // 2
    logits = z @ z.T / temperature  # (2n, 2n)
    logits.fill_diagonal_(float("-inf"))  # a view is not its own positive
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, target)


def retrieval_accuracy(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """Fraction of rows of ``feat_a`` whose nearest ``feat_b`` row (cosine) is their own pair."""
    fa = feat_a / np.linalg.norm(feat_a, axis=1, keepdims=True)
    fb = feat_b / np.linalg.norm(feat_b, axis=1, keepdims=True)
    return float(np.mean(np.argmax(fa @ fb.T, axis=1) == np.arange(len(fa))))


def evaluate_fakes(extract, volumes: list[np.ndarray], size: int, cfg: TrainConfig) -> dict:
    """KID/FID of held-out real crops against a second real set and against simple fakes."""
    from scipy.ndimage import gaussian_filter

    from core.metrics.distribution import compare_features

    rng = np.random.default_rng(cfg.seed + 2)
    real1, real2 = (sample_crops(volumes, 256, size, cfg.min_body, rng) for _ in range(2))
    fakes = {
        "real (second set)": real2,
        "gaussian blur sigma 1.5 px": gaussian_filter(real2, sigma=(0, 1.5, 1.5)),
        "added noise sd 30 HU": real2 + rng.normal(0, 30, real2.shape).astype(np.float32),
        "noise with matched mean/sd": rng.normal(real2.mean(), real2.std(), real2.shape).astype(np.float32),
    }
    f_real = extract(real1)
    out = {}
    for name, images in fakes.items():
        s = compare_features(f_real, extract(images), kid_subsets=50, kid_subset_size=128, seed=cfg.seed)
        out[name] = {"fid": round(s.fid, 4), "kid_mean": round(s.kid_mean, 5), "kid_std": round(s.kid_std, 5)}
    return out


def main(cfg: TrainConfig) -> dict:
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from core.metrics.ct_encoder import CTEncoder, CTEncoderConfig, preprocess_hu

    # 1. Data: held-out cases for validation only
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    corpus = load_corpus(Path(cfg.data_dir))
    missing = [h for h in cfg.held_out if h not in corpus]
    if missing:
        raise SystemExit(f"held-out cases not found in {cfg.data_dir}: {missing}; found {sorted(corpus)}")
    train = [v for k, v in corpus.items() if k not in cfg.held_out]
    val = [corpus[k] for k in cfg.held_out]
    enc_cfg = CTEncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.encoder.items()})
    size = enc_cfg.input_size
    val_a, val_b = sample_pairs(val, cfg.val_pairs, size, cfg, np.random.default_rng(cfg.seed + 1))
    print(f"{len(train)} training volumes, {sum(v.shape[0] for v in train)} slices; held out {cfg.held_out}")

    # 2. Model: encoder + projection head (discarded after training)
    encoder = CTEncoder(enc_cfg)
    d = enc_cfg.feature_dim
    head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def get_lr(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr / 20 + (cfg.lr - cfg.lr / 20) * 0.5 * (1 + math.cos(math.pi * progress))

    @torch.no_grad()
    def extract(images: np.ndarray) -> np.ndarray:
        encoder.eval()
        out = np.concatenate([encoder(preprocess_hu(images[i : i + 256], enc_cfg)).double().numpy()
                              for i in range(0, len(images), 256)])
        encoder.train()
        return out

    @torch.no_grad()
    def validate() -> dict:
        fa, fb = extract(val_a), extract(val_b)
        head.eval()
        z = head(torch.from_numpy(np.concatenate([fa, fb])).float())
        head.train()
        return {"val_loss": float(nt_xent(z, cfg.temperature)), "val_top1": retrieval_accuracy(fa, fb)}

    # 3. Training loop; the untrained encoder's figures are kept to show what training adds
    untrained = {**validate(), "held_out_real_vs_fakes": evaluate_fakes(extract, val, size, cfg)}
    print("untrained:", json.dumps(untrained), flush=True)
    history, t_train, cpu_train, ema = [], time.time(), time.process_time(), None
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = get_lr(step)
        a, b = sample_pairs(train, cfg.batch_pairs, size, cfg, rng)
        x = preprocess_hu(np.concatenate([a, b]), enc_cfg)  # (2B, C, S, S)
        loss = nt_xent(head(encoder(x)), cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % cfg.eval_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "train_loss_ema": round(ema, 4), **validate(),
                   "time_s": round(time.time() - t0)}
            history.append(row)
            print(json.dumps(row), flush=True)
    train_time, cpu_time = time.time() - t_train, time.process_time() - cpu_train  # CPU shared: wall > CPU

    # 4. Save encoder weights and the model card
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder.eval()
    weights = out / "model.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(weights))
    final = history[-1]
    card = {
        "name": "synthdx CT feature network",
        "task": "contrastive (NT-Xent): same crop on neighbouring axial slices is the positive pair",
        "architecture": "core.metrics.ct_encoder.CTEncoder",
        "config": enc_cfg.to_json(),
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "feature_dim": enc_cfg.feature_dim,
        "input": {
            "images": "(N, H, W) float HU, axial CT crops",
            "normalisation": "one channel per hu_range: clip to [low, high], scale to [-1, 1]",
            "resize": "bilinear, antialiased, align_corners=False, to input_size x input_size; "
                      "non-square is stretched",
        },
        "data": {
            "sources": SOURCES,
            "training_volumes": sorted(k for k in corpus if k not in cfg.held_out),
            "held_out": list(cfg.held_out),
        },
        "training": {**asdict(replace(cfg, data_dir=os.path.relpath(cfg.data_dir, REPO),
                                      out_dir=os.path.relpath(cfg.out_dir, REPO))),
                     "wall_time_s": round(train_time, 1), "cpu_time_s": round(cpu_time, 1),
                     "load_time_s": round(t_train - t0, 1),
                     "torch": torch.__version__, "device": "cpu"},
        "metrics": {
            "final_train_loss_ema": final["train_loss_ema"],
            "val_loss": round(final["val_loss"], 4),
            "val_top1_retrieval": round(final["val_top1"], 4),
            "val_top1_chance": round(1 / cfg.val_pairs, 4),
            "history": history,
            "held_out_real_vs_fakes": evaluate_fakes(extract, val, size, cfg),
            "untrained_encoder_same_seed": untrained,
        },
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "command": "python -m core.training.train_features --out assets/models/ct-features",
        "licence": "weights: Apache-2.0 (project licence); trained on CC BY 4.0 and CC BY 3.0 data",
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"saved {weights} ({weights.stat().st_size / 1e6:.1f} MB), trained {train_time / 60:.1f} min")
    return card


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("data_dir", "out_dir", "seed", "steps", "batch_pairs", "lr", "temperature", "val_pairs",
                 "eval_every", "threads"):
        flag = "--" + name.replace("_", "-").replace("-dir", "")
        p.add_argument(flag, dest=name, type=type(getattr(defaults, name)), default=getattr(defaults, name))
    return TrainConfig(**vars(p.parse_args(argv)))


if __name__ == "__main__":
    main(parse_args())
