"""Train the tiled H&E latent model: UNet + tissue-layout ControlNet + condition tokens.

The model lives in the latent space of the H&E autoencoder (``train_autoencoder``; 4x
downsampling, so a 256 px tile is a 4 x 64 x 64 latent) and is written in the shared model
folder layout (``core.pipelines.label_models``): ``unet/`` (``UNet2DConditionModel``, 4
latent channels in and out), ``controlnet/`` (``ControlNetModel.from_unet``: the tissue
layout as a one-hot control image at pixel resolution, classes ``core.tissue.TISSUE_CLASSES``,
0 = free), ``condition_embedding/`` (tokens ``he``, the stain style ``style:<slide>``, and
``<class>:present|absent`` per tissue class of the window), ``scheduler/`` and a card whose
``base`` points at the autoencoder folder (the ``vae/`` is taken from there).

UNet and ControlNet are trained together from scratch. For 10 % of the examples the
ControlNet is switched off (the UNet alone must then produce tissue matching the tokens),
so the base stays a usable model on which ``synthdx train controlnet`` can train other
ControlNets; for another 10 % a random block of layout cells is *free*; the style token is
left out 10 % of the time. Crops are 32 x 32 latents (128 px) for 85 % of the steps and 64 x 64
(256 px, the default sampling window) otherwise: the small ones are four times cheaper.

Data: the autoencoder's latents of the training regions of both slides
(``train_autoencoder.HE_SLIDES``) in 4 rotations, encoded once (Gaussian-blended
windows, ``core.tiling``) and cached in the run folder; the held-out regions give the
validation loss and sample grids. The shared loop (``core.training.loop``) adds EMA,
checkpoints and exact resume.

Run (about 1.5 hours of one CPU thread)::

    python -m core.training.train_he_tiles --autoencoder assets/models/he-autoencoder --out runs/he-tiles
    python -m core.training.train_he_tiles --ship runs/he-tiles/model assets/models/he-tiles
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.pipelines.histo_tiled import one_hot, prompt_tokens
from core.tissue import DEFAULT_CELL, TISSUE_CLASSES
from core.training.loop import LoopSettings
from core.training.train_autoencoder import (
    DEFAULT_DATA,
    HE_SLIDES,
    dihedral,
    encode_image,
    holdout_crops,
    load_slides,
)

STYLES = tuple(f"style:{s.name}" for s in HE_SLIDES)
TOKENS = ("<pad>", "he", *STYLES, *(f"{c}:{p}" for c in TISSUE_CLASSES for p in ("present", "absent")))
PROMPT_LENGTH = 2 + len(TISSUE_CLASSES)


@dataclass(frozen=True)
class TilesConfig(LoopSettings):
    """One run (defaults: the shipped model); the loop's fields and their meaning: ``LoopSettings``."""

    data_dir: str = str(DEFAULT_DATA)
    autoencoder: str = "assets/models/he-autoencoder"
    out_dir: str = "runs/he-tiles"
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    attention_levels: tuple[bool, ...] = (False, False, False, True)  # cross/self-attention at 8x8 only
    layers_per_block: int = 1
    norm_num_groups: int = 16
    token_dim: int = 64  # condition-embedding size = UNet cross_attention_dim
    crop_sizes: tuple[tuple[int, float], ...] = ((32, 0.85), (64, 0.15))  # (latent side, probability) per step
    orientations: int = 4  # rotations of each training region encoded (1..8; 4..7 add mirror images)
    min_tissue: float = 0.25
    glass_share: float = 0.15
    control_drop: float = 0.1
    free_block: float = 0.1
    style_drop: float = 0.1
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"
    steps: int = 2000
    learning_rate: float = 3e-4
    warmup_steps: int = 200
    sample_every: int = 500
    num_threads: int = 1
    sample_steps: int = 20
    val_crops: int = 16


def token_ids(tokens: list[str]) -> np.ndarray:
    ids = [TOKENS.index(t) for t in tokens]
    return np.asarray(ids + [0] * (PROMPT_LENGTH - len(ids)), np.int64)


@dataclass
class Orientation:
    slide: int  # index into the loaded slides
    latents: np.ndarray  # (8, h, w) float16: mean and std
    layout: np.ndarray  # (h / cell_latent, w / cell_latent) uint8 classes
    tissue: np.ndarray  # (n, 2) latent (y, x) corners of crops with enough tissue
    anywhere: np.ndarray  # (n, 2) corners of any crop


class LatentCrops:
    """``LatentCrops[i]``: latent posterior crop, control label map, prompt ids; pure function of ``(seed, i)``."""

    def __init__(self, orientations: dict[int, list[Orientation]], config: TilesConfig, factor: int):
        self.o, self.config, self.f = orientations, config, factor
        self.sizes = np.asarray([s for s, _ in config.crop_sizes])
        self.probs = np.asarray([p for _, p in config.crop_sizes]) / sum(p for _, p in config.crop_sizes)

    def __len__(self) -> int:
        return 2**62

    def size_of_step(self, step: int) -> int:
        return int(np.random.default_rng([self.config.seed, step, 7]).choice(self.sizes, p=self.probs))

    def __getitem__(self, i: int) -> dict:
        c = self.config
        size = self.size_of_step(i // c.batch_size)
        rng = np.random.default_rng([c.seed, i])
        per = self.o[size]
        slide = int(rng.integers(len(HE_SLIDES)))
        choices = [o for o in per if o.slide == slide]
        o = choices[int(rng.integers(len(choices)))]
        pool = o.anywhere if rng.random() < c.glass_share else o.tissue
        y, x = pool[rng.integers(len(pool))]
        lat = o.latents[:, y : y + size, x : x + size].astype(np.float32)
        cell = DEFAULT_CELL // self.f  # latent pixels per layout cell
        cells = o.layout[y // cell : (y + size - 1) // cell + 1, x // cell : (x + size - 1) // cell + 1]
        px = np.repeat(np.repeat(cells, DEFAULT_CELL, 0), DEFAULT_CELL, 1)
        oy, ox = (y % cell) * self.f, (x % cell) * self.f
        labels = px[oy : oy + size * self.f, ox : ox + size * self.f].astype(np.int64) + 1  # 0 = free
        if rng.random() < c.free_block:
            by, bx = rng.integers(0, labels.shape[0], 2)
            bh, bw = rng.integers(labels.shape[0] // 4, labels.shape[0] + 1, 2)
            labels[by : by + bh, bx : bx + bw] = 0
        style = None if rng.random() < c.style_drop else HE_SLIDES[slide].name
        region = labels[labels > 0] - 1
        return {
            "latents": lat,
            "labels": labels,
            "ids": token_ids(prompt_tokens(style, region)),
            "use_control": np.float32(rng.random() >= c.control_drop),
        }


def latent_positions(
    layout: np.ndarray, size: int, cell: int, min_tissue: float, *, step: int = 4
) -> np.ndarray:
    """Latent (y, x) corners, on a grid of ``step``, of ``size`` crops with enough tissue.

    ``layout`` has one class per ``cell`` latent pixels; class 0 is glass.
    """
    glass = (layout == 0).astype(np.float32)
    h, w = layout.shape[0] * cell, layout.shape[1] * cell
    ys, xs = np.mgrid[0 : h - size + 1 : step, 0 : w - size + 1 : step]
    pos = np.stack([ys.ravel(), xs.ravel()], axis=1)
    ok = [
        1.0 - glass[y // cell : -(-(y + size) // cell), x // cell : -(-(x + size) // cell)].mean()
        >= min_tissue
        for y, x in pos
    ]
    return pos[np.asarray(ok, bool)]


def prepare_orientations(loaded, vae, config: TilesConfig, cache: Path) -> dict[int, list[Orientation]]:
    """Latents + layouts of each slide's training region in ``config.orientations`` orientations (cached in ``cache``)."""
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    cell = DEFAULT_CELL // f  # latent pixels per layout cell
    cached = dict(np.load(cache)) if cache.is_file() else {}
    out: dict[int, list[Orientation]] = {s: [] for s, _ in config.crop_sizes}
    n_cached = len(cached)
    for si, ls in enumerate(loaded):
        x0, y0, w, h = ls.slide.train
        w, h = w // DEFAULT_CELL * DEFAULT_CELL, h // DEFAULT_CELL * DEFAULT_CELL  # whole cells only
        rgb = ls.rgb[y0 : y0 + h, x0 : x0 + w]
        lay = ls.layout[
            y0 // DEFAULT_CELL : (y0 + h) // DEFAULT_CELL, x0 // DEFAULT_CELL : (x0 + w) // DEFAULT_CELL
        ]
        for k in range(config.orientations):
            key = f"{ls.slide.name}_{k}"
            if key not in cached:
                print(f"encoding {key} ...", flush=True)
                cached[key] = encode_image(vae, np.ascontiguousarray(dihedral(rgb, k)))
            layout = np.ascontiguousarray(dihedral(lay, k))
            for size, _ in config.crop_sizes:
                tissue, anywhere = (latent_positions(layout, size, cell, m) for m in (config.min_tissue, 0.0))
                out[size].append(Orientation(si, cached[key], layout, tissue, anywhere))
    if len(cached) != n_cached:
        np.savez(cache, **cached)
    return out


def build_models(config: TilesConfig):
    """Fresh ``(unet, controlnet, condition_embedding)``."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from core.pipelines.label_models import condition_embedding_class, controlnet_embedding_channels

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=config.block_out_channels,
        down_block_types=down, up_block_types=up, layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups, cross_attention_dim=config.token_dim, attention_head_dim=32,
    )  # fmt: skip
    controlnet = ControlNetModel.from_unet(
        unet,
        conditioning_channels=len(TISSUE_CLASSES),
        conditioning_embedding_out_channels=controlnet_embedding_channels(4),
    )
    embedding = condition_embedding_class()(
        tokens=list(TOKENS), dim=config.token_dim, max_length=PROMPT_LENGTH
    )
    return unet, controlnet, embedding


def _model_class():
    import torch

    class TileModel(torch.nn.Module):
        """UNet + ControlNet + token embedding as one module (what the loop trains and averages)."""

        def __init__(self, unet, controlnet, embedding):
            super().__init__()
            self.unet, self.controlnet, self.embedding = unet, controlnet, embedding

        def forward(self, latents, timesteps, ids, control, use_control):
            states = self.embedding(ids)  # (b, L, dim)
            down, mid = self.controlnet(latents, timesteps, states, control, return_dict=False)
            gate = use_control.view(-1, 1, 1, 1)  # 0 = ControlNet off for this example
            residuals = {"down_block_additional_residuals": [d * gate for d in down], "mid_block_additional_residual": mid * gate}
            return self.unet(latents, timesteps, states, **residuals).sample

    return TileModel


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class HETilesTask:
    """``core.training.loop.Task`` for the tiled H&E model."""

    description = "train he-tiles"

    def __init__(self, config: TilesConfig):
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler

        self.config = config
        self.ae_dir = Path(config.autoencoder).resolve()
        self.ae_card = json.loads((self.ae_dir / "model_card.json").read_text())
        self.vae = AutoencoderKL.from_pretrained(self.ae_dir / "vae", local_files_only=True).eval()
        self.latent = self.ae_card["latent"]
        self.factor = int(self.latent["downsample"])
        self.scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            prediction_type=config.prediction_type,
            clip_sample=False,
        )
        self.slides = load_slides(config.data_dir)
        ae_hash = _digest(self.ae_dir / "vae" / "diffusion_pytorch_model.safetensors")[:12]
        cache = Path(config.out_dir) / f"latents_{ae_hash}.npz"
        with torch.no_grad():
            self.orientations = prepare_orientations(self.slides, self.vae, config, cache)
        self.val_rgb = holdout_crops(self.slides, config.val_crops, 256, config.seed + 2, min_tissue=0.3)

    def build(self, device):
        return _model_class()(*build_models(self.config)).to(device)

    def dataset(self):
        return LatentCrops(self.orientations, self.config, self.factor)

    def summary(self) -> str:
        return (
            f"latent crops of sizes {[s for s, _ in self.config.crop_sizes]} from {len(self.slides)} slides x "
            f"{self.config.orientations} orientations; held-out regions for validation"
        )

    def _scaled(self, z):
        return (z - float(self.latent["shift_factor"] or 0.0)) * float(self.latent["scaling_factor"])

    def loss(self, model, batch, generator, device):
        import torch
        import torch.nn.functional as F

        post = batch["latents"]
        mean, std = post[:, :4], post[:, 4:]
        z = self._scaled(mean + std * torch.randn(mean.shape, generator=generator)).to(device)
        noise = torch.randn(z.shape, generator=generator).to(device)
        t = torch.randint(0, self.config.num_train_timesteps, (z.shape[0],), generator=generator).to(device)
        noisy = self.scheduler.add_noise(z, noise, t)
        control = one_hot(batch["labels"], len(TISSUE_CLASSES)).to(device)
        pred = model(noisy, t, batch["ids"].to(device), control, batch["use_control"].to(device))
        target = (
            noise if self.config.prediction_type == "epsilon" else self.scheduler.get_velocity(z, noise, t)
        )
        return F.mse_loss(pred.float(), target.float())

    def validate(self, model, step, png, device) -> dict:
        """Held-out loss at fixed noise levels; a grid of real | layout | generated 256 px tiles."""
        import tempfile

        import torch
        from PIL import Image

        from core.pipelines.histo_tiled import HistoTiledPipeline
        from core.pipelines.label_models import load_label_model
        from core.tissue import layout_to_rgb, tissue_layout

        rgb, n = self.val_rgb, len(HE_SLIDES)  # holdout_crops alternates the slides
        layouts = [tissue_layout(r, reference=self.slides[i % n].reference) for i, r in enumerate(rgb)]
        labels = np.stack([np.repeat(np.repeat(lay, DEFAULT_CELL, 0), DEFAULT_CELL, 1) for lay in layouts]) + 1
        ids = np.stack([token_ids(prompt_tokens(HE_SLIDES[i % n].name, lay)) for i, lay in enumerate(layouts)])
        control = one_hot(torch.from_numpy(labels.astype(np.int64)), len(TISSUE_CLASSES))
        x = torch.from_numpy(rgb.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
        z, gen, losses = self._scaled(self.vae.encode(x).latent_dist.mean), torch.Generator().manual_seed(1234), []
        for t in (100, 300, 500, 700, 900):
            noise = torch.randn(z.shape, generator=gen)
            ts = torch.full((len(z),), t, dtype=torch.long)
            pred = model(self.scheduler.add_noise(z, noise, ts), ts, torch.from_numpy(ids), control, torch.ones(len(z)))
            losses.append(float(((pred - noise) ** 2).mean()))
        with tempfile.TemporaryDirectory() as tmp:
            self.export(model, None, Path(tmp) / "m")
            pipe, rows = HistoTiledPipeline(load_label_model(Path(tmp) / "m")), []
            for i in range(4):
                out = pipe(layouts[i], height=256, width=256, num_inference_steps=self.config.sample_steps, seed=i,
                           style=HE_SLIDES[i % n].name)  # fmt: skip
                rows.append(np.concatenate([rgb[i], layout_to_rgb(layouts[i], scale=DEFAULT_CELL), out.image], axis=1))
        Image.fromarray(np.concatenate(rows, axis=0)).save(png)
        return {"val_loss": round(float(np.mean(losses)), 5)}

    def export(self, model, info, out: Path) -> None:
        from diffusers import DDPMScheduler

        out.mkdir(parents=True, exist_ok=True)
        model.unet.save_pretrained(out / "unet", safe_serialization=True)
        model.controlnet.save_pretrained(out / "controlnet", safe_serialization=True)
        model.embedding.save_pretrained(out / "condition_embedding", safe_serialization=True)
        DDPMScheduler.from_config(self.scheduler.config).save_pretrained(out / "scheduler")
        (out / "model_card.json").write_text(json.dumps(self.card(info, out), indent=2) + "\n")

    def card(self, info, out: Path) -> dict:
        from core.training.export import code_version, machine
        from core.training.loop import config_history

        cfg = self.config
        card = {
            "card_format": 1, "name": "synthdx-he-tiles", "kind": "latent-diffusion", "domain": "he",
            "description": "Tissue-layout-conditioned H&E tiles in the latent space of synthdx-he-autoencoder: "
            "UNet2DConditionModel + ControlNet (one-hot tissue layout) + condition tokens. Tiled sampling of "
            "slides of any size: core.pipelines.histo_tiled. Synthetic output: not for diagnosis.",
            "base": {"path": os.path.relpath(self.ae_dir, out.resolve())},
            "resolution": 256, "channels": 3, "intensity": {"rgb": "x / 127.5 - 1"}, "latent": self.latent,
            "classes": list(TISSUE_CLASSES), "class_rules": {c: [c] for c in TISSUE_CLASSES},
            "layout": {"cell_px": DEFAULT_CELL, "derived_by": "core.tissue.tissue_layout"},
            "prompt": {"kind": "class-presence", "prefix": ["he"], "styles": list(STYLES)},
            "styles": {s.name: {"mpp": s.mpp if s.mpp else TCGA_MPP_ESTIMATE,
                                "mpp_note": "" if s.mpp else TCGA_MPP_NOTE, "source": s.note} for s in HE_SLIDES},
            "control": {"encoding": "one-hot", "regime": "trained jointly with the UNet from scratch"},
        }  # fmt: skip
        if info is not None:
            card["training"] = {
                "steps": info.step, "batch_size": cfg.batch_size * info.world_size, "wall_time_s": round(info.wall_time_s, 1),
                "machine": machine(), "seed": cfg.seed, "n_parameters": info.n_parameters,
                "autoencoder": {"path": str(self.ae_dir), "name": self.ae_card.get("name")},
                "data": [{"name": s.name, "file": s.file, "licence": s.licence, "attribution": s.attribution,
                          "train_region_xywh": list(s.train), "holdout_region_xywh": list(s.holdout)} for s in HE_SLIDES],
                "config": {k: v for k, v in asdict(cfg).items() if k not in ("data_dir", "out_dir", "autoencoder")},
                "earlier_phases": config_history(cfg.out_dir),  # configs this run was resumed from
            }  # fmt: skip
            card["metrics"] = info.metrics
            card["licences"] = sorted({s.licence for s in HE_SLIDES})
            card["code_version"] = code_version()
        return card


# The TCGA file states no pixel size; next to CMU-1 (0.499 µm/px) shown at half size, its nuclei
# look the same size, so about 1 µm/px: written to the TIFF of that style and flagged as estimated.
TCGA_MPP_ESTIMATE = 1.0
TCGA_MPP_NOTE = "estimated by eye from nuclear size against CMU-1 (the TCGA file states no pixel size)"


def train(config: TilesConfig, *, progress: bool = True) -> Path:
    """Train (or resume) the tiled H&E model; returns the exported folder ``<out_dir>/model``."""
    from core.training.loop import run_loop

    Path(config.out_dir).mkdir(parents=True, exist_ok=True)  # the task caches its latents there
    return run_loop(HETilesTask(config), config, progress=progress)


def ship(model_dir: str | Path, dest: str | Path, autoencoder: str | Path) -> Path:
    """Copy an exported model folder to ``dest`` (weights as float16) and point its card's base at ``autoencoder``."""
    from core.training.export import store_float16

    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(model_dir, dest)
    card = json.loads((dest / "model_card.json").read_text())
    card["base"] = {"path": os.path.relpath(Path(autoencoder).resolve(), dest.resolve())}
    card["storage"] = store_float16(dest)
    (dest / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the tiled H&E model (see the module docstring).")
    p.add_argument("--out", default=TilesConfig.out_dir, help="run folder (resumed when it holds checkpoints)")
    p.add_argument("--autoencoder", default=TilesConfig.autoencoder, help="H&E autoencoder model folder")
    p.add_argument("--data-dir", default=TilesConfig.data_dir, help="folder holding histo/ (default ../shared/data)")
    for name in ("steps", "batch_size", "seed", "orientations", "sample_every"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(TilesConfig, name))
    p.add_argument("--threads", type=int, default=TilesConfig.num_threads)
    p.add_argument("--ship", nargs=2, metavar=("MODEL_DIR", "DEST"), help="copy a trained model folder into assets")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.ship:
        print(ship(a.ship[0], a.ship[1], a.autoencoder))
        return 0
    cfg = TilesConfig(data_dir=a.data_dir, autoencoder=a.autoencoder, out_dir=a.out, steps=a.steps,
                      batch_size=a.batch_size, num_threads=a.threads, seed=a.seed, orientations=a.orientations,
                      sample_every=min(a.sample_every, a.steps), checkpoint_every=min(TilesConfig.checkpoint_every, a.steps))  # fmt: skip
    print(train(cfg, progress=not a.no_progress))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
