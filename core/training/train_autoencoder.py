"""Train the H&E autoencoder (diffusers ``AutoencoderKL``, 4x downsampling, 4 latent channels).

The tiled H&E model (``core.training.train_he_tiles``) works in this autoencoder's latent
space: a 256 x 256 RGB tile is a 4 x 64 x 64 latent. The network is small (0.9M parameters,
no attention in the mid block, so it is fully convolutional and tiles decode the same
wherever they sit) because a 4096 x 4096 slide is decoded on a CPU in minutes.

Data: random crops of the two H&E slides in ``../shared/data/histo`` (``HE_SLIDES``), level 0,
never from their held-out regions (``HESlide.holdout``), which feed the validation figures
and the patch FID/KID of the tiled model. Loss: L1 on pixels + L1 on image gradients (keeps
nuclear edges sharp without a perceptual network, which we could not download) + a small KL
term. The shared loop (``core.training.loop``) adds EMA, checkpoints and exact resume.

Run (the shipped model: 750 steps, 61 minutes on a shared 2-core CPU, about 25 minutes of
CPU time on one thread; validation PSNR still rising slowly when we stopped). Writes a model
folder with ``vae/`` + card::

    python -m core.training.train_autoencoder --out runs/he-autoencoder
    cp -r runs/he-autoencoder/model assets/models/he-autoencoder

Smoke run (seconds): ``python -m core.training.train_autoencoder --steps 2 --batch-size 2 --out /tmp/ae``
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from core.training.loop import LoopSettings

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"


@dataclass(frozen=True)
class HESlide:
    """A training slide and the rectangles (x, y, width, height at level 0) we use of it."""

    name: str
    file: str  # relative to the data folder
    licence: str
    attribution: str
    mpp: float | None  # microns per pixel at level 0; None when the file does not say
    train: tuple[int, int, int, int]
    holdout: tuple[int, int, int, int]  # never trained on (validation, patch FID/KID)
    note: str = ""


HE_SLIDES: tuple[HESlide, ...] = (
    HESlide(
        "cmu-1",
        "histo/cmu-1-small-region.svs",
        "CC0-1.0",
        "CMU-1 small region, OpenSlide test data (Carnegie Mellon University)",
        0.499,
        train=(0, 0, 2220, 2400),
        holdout=(0, 2400, 2220, 567),
        note="skin, FFPE, 20x",
    ),
    HESlide(
        "tcga",
        "histo/tcga-cr-7395-01a-01-ts1.svs",
        "TCGA open access (NIH Genomic Data Commons)",
        "TCGA-CR-7395-01A-01-TS1, The Cancer Genome Atlas (TCGA Research Network)",
        None,
        train=(0, 0, 3456, 3567),
        holdout=(3456, 0, 987, 3567),
        note="head-and-neck squamous cell carcinoma, frozen section; the file states no pixel size",
    ),
)


@dataclass(frozen=True)
class AEConfig(LoopSettings):
    """One autoencoder run (defaults: the shipped model); the loop's fields and their meaning: ``LoopSettings``."""

    data_dir: str = str(DEFAULT_DATA)
    out_dir: str = "runs/he-autoencoder"
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # 3 levels -> 4x downsampling
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    crop: int = 64  # training crop side, pixels (the network is fully convolutional)
    min_tissue: float = 0.25  # crops need this tissue fraction, except a share `glass_share` drawn anywhere
    glass_share: float = 0.15
    grad_weight: float = 0.5  # weight of the image-gradient L1 term
    kl_weight: float = 1e-6
    steps: int = 750
    batch_size: int = 16
    learning_rate: float = 1e-3
    num_threads: int = 1  # other agents share this CPU
    val_crops: int = 32  # fixed held-out crops (128 px) for PSNR / SSIM


# --------------------------------------------------------------------------- data
@dataclass
class LoadedSlide:
    """A slide's level 0 in memory with its per-cell glass fraction (32 px cells)."""

    slide: HESlide
    rgb: np.ndarray  # (H, W, 3) uint8, the whole level 0
    glass: np.ndarray  # (ceil(H/32), ceil(W/32)) float32
    layout: np.ndarray  # (ceil(H/32), ceil(W/32)) uint8 tissue classes (core.tissue)
    reference: float  # hematoxylin reference of the whole slide


def load_slides(data_dir: str | Path, slides: tuple[HESlide, ...] = HE_SLIDES) -> list[LoadedSlide]:
    """Read every slide's level 0 and derive its tissue layout (``core.tissue``)."""
    from core.errors import InputError
    from core.io.slide import open_slide
    from core.tissue import DEFAULT_CELL, hematoxylin_reference, layout_from_fractions, tissue_fractions

    out = []
    for s in slides:
        path = Path(data_dir) / s.file
        if not path.is_file():
            raise InputError(f"{path}: H&E slide not found; pass --data-dir (the folder with histo/)")
        with open_slide(path) as slide:
            lvl = slide.levels[0]
            rgb = slide.read_region(level=0, x=0, y=0, width=lvl.width, height=lvl.height)
        ref = hematoxylin_reference(rgb)
        fractions = tissue_fractions(rgb, cell=DEFAULT_CELL, reference=ref)
        out.append(LoadedSlide(s, rgb, fractions[..., 0], layout_from_fractions(fractions), ref))
    return out


def crop_positions(
    loaded: LoadedSlide, crop: int, rect: tuple[int, int, int, int], min_tissue: float
) -> np.ndarray:
    """Top-left corners (y, x) on a 16-px grid of crops inside ``rect`` with enough tissue."""
    from core.tissue import DEFAULT_CELL

    x0, y0, w, h = rect
    ys, xs = np.mgrid[y0 : y0 + h - crop + 1 : 16, x0 : x0 + w - crop + 1 : 16]
    pos = np.stack([ys.ravel(), xs.ravel()], axis=1)
    c = DEFAULT_CELL
    ok = [
        1.0 - loaded.glass[y // c : -(-(y + crop) // c), x // c : -(-(x + crop) // c)].mean() >= min_tissue
        for y, x in pos
    ]
    return pos[np.asarray(ok, bool)]


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations/flips of an (h, w, ...) array (k in 0..7)."""
    a = np.rot90(a, k % 4)
    return a[:, ::-1] if k >= 4 else a


class HECrops:
    """``HECrops[i]``: a random RGB crop in [-1, 1], ``(3, crop, crop)``, a pure function of ``(seed, i)``."""

    def __init__(self, slides: list[LoadedSlide], config: AEConfig):
        self.slides, self.config = slides, config
        self.tissue = [crop_positions(s, config.crop, s.slide.train, config.min_tissue) for s in slides]
        self.anywhere = [crop_positions(s, config.crop, s.slide.train, 0.0) for s in slides]

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.config.seed, i])
        k = int(rng.integers(len(self.slides)))  # slides equally often: balances the two stains
        pool = self.anywhere[k] if rng.random() < self.config.glass_share else self.tissue[k]
        y, x = pool[rng.integers(len(pool))] + rng.integers(0, 16, 2)
        c = self.config.crop
        rgb = self.slides[k].rgb
        y, x = min(y, rgb.shape[0] - c), min(x, rgb.shape[1] - c)
        tile = dihedral(rgb[y : y + c, x : x + c], int(rng.integers(8)))
        return {"image": np.ascontiguousarray(tile.transpose(2, 0, 1), dtype=np.float32) / 127.5 - 1.0}


def holdout_crops(
    slides: list[LoadedSlide], n: int, size: int, seed: int, *, min_tissue: float = 0.5
) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 fixed crops from the held-out regions (alternating slides)."""
    rng = np.random.default_rng(seed)
    pools = [crop_positions(s, size, s.slide.holdout, min_tissue) for s in slides]
    out = []
    for j in range(n):
        k = j % len(slides)
        y, x = pools[k][rng.integers(len(pools[k]))]
        out.append(slides[k].rgb[y : y + size, x : x + size])
    return np.stack(out)


def encode_image(vae, rgb: np.ndarray, *, window: int = 256, overlap: int = 64) -> np.ndarray:
    """``(h, w, 3)`` uint8 -> ``(8, h/f, w/f)`` float16 latent mean and std, Gaussian-blended windows."""
    import torch

    from core.tiling import GaussianMerger, Splitter

    f = 2 ** (len(vae.config.block_out_channels) - 1)
    h, w = rgb.shape[0] // f, rgb.shape[1] // f
    merger = GaussianMerger((8, h, w))
    for win in Splitter(window // f, overlap // f).windows((h, w)):
        p = win.scaled(f)
        x = torch.from_numpy(
            rgb[p.y : p.y + p.h, p.x : p.x + p.w].transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1
        )
        with torch.no_grad():
            post = vae.encode(x).latent_dist
        merger.aggregate(torch.cat([post.mean, post.std], 1)[0].numpy(), win)
    return merger.finalize().astype(np.float16)


# --------------------------------------------------------------------------- model + task
def build_vae(config: AEConfig):
    from diffusers import AutoencoderKL

    n = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=config.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups, mid_block_add_attention=False, sample_size=config.crop,
    )  # fmt: skip


def _grad_l1(a, b):
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def psnr_ssim(real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM of uint8 RGB batches (``core.metrics.image`` on grey would lose colour)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    p = [peak_signal_noise_ratio(r, f, data_range=255) for r, f in zip(real, fake)]
    s = [structural_similarity(r, f, channel_axis=-1, data_range=255) for r, f in zip(real, fake)]
    return float(np.mean(p)), float(np.mean(s))


class AutoencoderTask:
    """``core.training.loop.Task`` for the H&E autoencoder."""

    description = "train he-autoencoder"

    def __init__(self, config: AEConfig):
        self.config = config
        self.slides = load_slides(config.data_dir)
        self.val = holdout_crops(self.slides, config.val_crops, 128, config.seed + 1)
        self.t_start = time.time()

    def build(self, device):
        return build_vae(self.config).to(device)

    def dataset(self):
        return HECrops(self.slides, self.config)

    def summary(self) -> str:
        return ", ".join(
            f"{s.slide.name}: train {s.slide.train}, held out {s.slide.holdout}" for s in self.slides
        )

    def loss(self, model, batch, generator, device):
        import torch

        x = batch["image"].to(device)
        post = model.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=generator).to(device)
        y = model.decode(z).sample
        kl = post.kl().mean() / x[0].numel()
        return (y - x).abs().mean() + self.config.grad_weight * _grad_l1(y, x) + self.config.kl_weight * kl

    def reconstruct(self, model, rgb: np.ndarray, device) -> np.ndarray:
        import torch

        x = torch.from_numpy(rgb.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0).to(device)
        y = model.decode(model.encode(x).latent_dist.mean).sample
        return ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    def validate(self, model, step, png, device) -> dict:
        from PIL import Image

        fake = self.reconstruct(model, self.val, device)
        p, s = psnr_ssim(self.val, fake)
        rows = [np.concatenate([r, f], axis=1) for r, f in zip(self.val[:8], fake[:8])]
        Image.fromarray(np.concatenate([np.concatenate(rows[:4], 0), np.concatenate(rows[4:8], 0)], 1)).save(
            png
        )
        return {"val_psnr_db": round(p, 2), "val_ssim": round(s, 4)}

    def latent_stats(self, model, device) -> tuple[float, float]:
        """Mean and std of the latent means over fixed training crops (the card's shift and 1/scale)."""
        import torch

        data = HECrops(self.slides, replace(self.config, crop=128, glass_share=0.15))
        x = torch.from_numpy(np.stack([data[10**9 + i]["image"] for i in range(64)])).to(device)
        z = model.encode(x).latent_dist.mean
        return float(z.mean()), float(z.std())

    def export(self, model, info, out: Path) -> None:
        from core.training.export import code_version, machine
        from core.training.loop import config_history

        shift, std = self.latent_stats(model, device=next(model.parameters()).device)
        model.register_to_config(scaling_factor=round(1.0 / std, 5), shift_factor=round(shift, 5))
        model.save_pretrained(out / "vae", safe_serialization=True)
        cfg = self.config
        card = {
            "card_format": 1, "name": "synthdx-he-autoencoder", "kind": "autoencoder", "domain": "he",
            "description": "KL autoencoder for H&E tiles (diffusers AutoencoderKL, 4x downsampling, 4 latent "
            "channels, no attention): the latent space of the tiled H&E model.",
            "intensity": {"rgb": "x / 127.5 - 1"}, "channels": 3,
            "latent": {"downsample": 2 ** (len(cfg.block_out_channels) - 1), "channels": cfg.latent_channels,
                       "scaling_factor": round(1.0 / std, 5), "shift_factor": round(shift, 5)},
            "training": {
                "steps": info.step, "batch_size": cfg.batch_size * info.world_size, "crop_px": cfg.crop,
                "wall_time_s": round(info.wall_time_s, 1), "machine": machine(), "seed": cfg.seed,
                "n_parameters": info.n_parameters,
                "data": [{"name": s.name, "file": s.file, "licence": s.licence, "attribution": s.attribution,
                          "mpp": s.mpp, "train_region_xywh": list(s.train), "holdout_region_xywh": list(s.holdout),
                          "note": s.note} for s in HE_SLIDES],
                "config": {k: v for k, v in asdict(cfg).items() if k not in ("data_dir", "out_dir")},
                "earlier_phases": config_history(cfg.out_dir),  # configs this run was resumed from
            },
            "metrics": {**info.metrics, "validation": f"{cfg.val_crops} crops of 128 px from the held-out regions"},
            "licences": sorted({s.licence for s in HE_SLIDES}),
            "code_version": code_version(),
        }  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")


def train(config: AEConfig, *, progress: bool = True) -> Path:
    """Train (or resume) the autoencoder; returns the exported model folder ``<out_dir>/model``."""
    from core.training.loop import run_loop

    return run_loop(AutoencoderTask(config), config, progress=progress)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the H&E autoencoder (see the module docstring).")
    p.add_argument("--out", default=AEConfig.out_dir, help="run folder (resumed when it holds checkpoints)")
    p.add_argument(
        "--data-dir", default=AEConfig.data_dir, help="folder holding histo/ (default ../shared/data)"
    )
    p.add_argument("--steps", type=int, default=AEConfig.steps)
    p.add_argument("--batch-size", type=int, default=AEConfig.batch_size)
    p.add_argument("--threads", type=int, default=AEConfig.num_threads)
    p.add_argument("--seed", type=int, default=AEConfig.seed)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    cfg = AEConfig(
        data_dir=a.data_dir,
        out_dir=a.out,
        steps=a.steps,
        batch_size=a.batch_size,
        num_threads=a.threads,
        seed=a.seed,
        sample_every=min(AEConfig.sample_every, a.steps),
        checkpoint_every=min(AEConfig.checkpoint_every, a.steps),
    )
    print(train(cfg, progress=not a.no_progress))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
