"""Train the CT label-diffusion base: a ``UNet2DConditionModel`` on CT slices, conditioned on class-presence tokens.

The base learns what a 64 x 64 axial CT slice at ``pixel_mm`` looks like, given which
classes it shows (``ct``, ``liver:present``, ``kidney:absent`` ... through a learned
``ConditionEmbedding`` standing in for a text encoder). Spatial control comes later, from
a ControlNet trained on it (``train_controlnet``). Runs on CPU, one GPU or several::

    synthdx train label-diffusion --config core/training/recipes/ct_label_diffusion_demo.json --data-root ../shared/data
    python -m core.training.train_label_diffusion runs/ct-label-diffusion/config.json
    accelerate launch -m core.training.train_label_diffusion runs/ct-label-diffusion/config.json

The loop (EMA, checkpoints, exact resume, ``snapshot_steps`` exports) is
``core.training.loop``; the model folder layout is ``core.pipelines.label_models``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from core.pipelines.label_models import CARD_FORMAT, PAD
from core.training.label_config import (
    LabelDiffusionConfig,
    LabelUNetConfig,
    load,
    validate_data,
    validate_unet,
)

ALWAYS = ("air", "body")  # derived classes: present on every CT slice, so not in the prompt
PREFIX = ("ct",)
_VAL_EXAMPLES = 8
_VAL_TIMESTEPS = (50, 200, 400, 600, 800)


def build_unet(m: LabelUNetConfig, *, in_channels: int = 1, out_channels: int | None = None):
    """A fresh ``UNet2DConditionModel`` (cross-attention where ``cross_attention_levels`` says, and in the mid block)."""
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in m.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(m.cross_attention_levels))
    return UNet2DConditionModel(
        sample_size=m.resolution, in_channels=in_channels, out_channels=out_channels or in_channels,
        block_out_channels=m.block_out_channels, down_block_types=down, up_block_types=up,
        layers_per_block=m.layers_per_block, norm_num_groups=m.norm_num_groups,
        cross_attention_dim=m.cross_attention_dim, attention_head_dim=m.attention_head_dim,
    )  # fmt: skip


def build_scheduler(m: LabelUNetConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=m.num_train_timesteps,
        beta_schedule=m.beta_schedule,
        prediction_type=m.prediction_type,
        clip_sample=False,
    )


def vocabulary(classes: tuple[str, ...]) -> list[str]:
    """Tokens of the class-presence prompt: ``<pad>``, ``ct``, then ``<class>:present``/``:absent``."""
    return [PAD, *PREFIX] + [
        f"{c}:{state}" for c in classes if c not in ALWAYS for state in ("present", "absent")
    ]


def prompt_ids(embedding, classes: tuple[str, ...], present, drop=None):
    """``(b, L)`` token ids from ``(b, C)`` class presence; rows with ``drop`` become all ``<pad>``."""
    import torch

    idx = embedding.index
    prompted = [k for k, c in enumerate(classes) if c not in ALWAYS]
    yes = torch.tensor([idx[f"{classes[k]}:present"] for k in prompted])
    no = torch.tensor([idx[f"{classes[k]}:absent"] for k in prompted])
    p = present[:, prompted].cpu() > 0.5
    ids = torch.cat(
        [torch.tensor([[idx[t] for t in PREFIX]]).expand(len(p), -1), torch.where(p, yes, no)], dim=1
    )
    if drop is not None:
        ids[drop.cpu()] = 0
    return ids.to(embedding.position.device)


def masked_mse(pred, target, valid):
    """MSE over valid pixels only (``valid`` ``(b, 1, h, w)``, broadcast over channels)."""
    err = (pred.float() - target.float()) ** 2 * valid
    return err.sum() / (valid.sum() * pred.shape[1]).clamp(min=1.0)


def diffusion_target(scheduler, x0, noise, timesteps):
    return (
        noise
        if scheduler.config.prediction_type == "epsilon"
        else scheduler.get_velocity(x0, noise, timesteps)
    )


class LabelDiffusionTask:
    """``core.training.loop.Task`` for the base: UNet + condition embedding trained together."""

    description = "train label-diffusion"

    def __init__(self, config: LabelDiffusionConfig):
        from core.training.label_data import load_examples

        self.config = config
        d = config.data
        self.data = load_examples(d, resolution=config.model.resolution, seed=config.seed)
        self.val = (
            load_examples(d, resolution=config.model.resolution, seed=config.seed + 1, holdout=True)
            if d.holdout
            else self.data
        )
        self.val_items = validation_items(self.val)
        self.scheduler = build_scheduler(config.model)
        self.classes = tuple(d.classes)

    def build(self, device):
        import torch

        from core.pipelines.label_models import condition_embedding_class

        m = self.config.model
        unet = build_unet(m)
        embedding = condition_embedding_class()(
            tokens=vocabulary(self.classes),
            dim=m.cross_attention_dim,
            max_length=len(vocabulary(self.classes)),
        )
        return torch.nn.ModuleDict({"unet": unet, "embedding": embedding})

    def dataset(self):
        return self.data

    def summary(self) -> str:
        sources = sorted({s.source for s in self.data.slices})
        return f"{len(self.data.slices)} training slices from {len(sources)} sources ({len(self.data.partial)} lesion-only), {len(self.val.slices) if self.val is not self.data else 0} held-out slices"

    def loss(self, net, batch: dict, gen, device):
        import torch

        x0, valid, present = batch["image"].to(device), batch["valid"].to(device), batch["present"]
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(
            device
        )
        drop = torch.rand(x0.shape[0], generator=gen) < self.config.prompt_dropout
        emb = net["embedding"]
        states = emb(prompt_ids(emb, self.classes, present, drop))
        pred = net["unet"](self.scheduler.add_noise(x0, noise, t), t, states).sample
        return masked_mse(pred, diffusion_target(self.scheduler, x0, noise, t), valid)

    def validate(self, net, step: int, png: Path, device) -> dict:
        import torch

        from core.pipelines.controlnet import denoise

        x0, valid, present = (
            torch.from_numpy(np.stack([it[k] for it in self.val_items])).to(device)
            for k in ("image", "valid", "present")
        )
        emb = net["embedding"]
        states = emb(prompt_ids(emb, self.classes, present))
        gen, losses = torch.Generator().manual_seed(1234), []
        for t in _VAL_TIMESTEPS:
            noise = torch.randn(x0.shape, generator=gen).to(device)
            ts = torch.full((x0.shape[0],), t, dtype=torch.long, device=device)
            pred = net["unet"](self.scheduler.add_noise(x0, noise, ts), ts, states).sample
            losses.append(float(masked_mse(pred, diffusion_target(self.scheduler, x0, noise, ts), valid)))
        gens = [torch.Generator().manual_seed(i) for i in range(len(self.val_items))]
        sample = denoise(
            net["unet"],
            dict(self.scheduler.config),
            states,
            gens,
            tuple(x0.shape[1:]),
            num_inference_steps=self.config.sample_steps,
            sampler="ddim",
        )
        save_grid(
            [it["control"] for it in self.val_items],
            sample.cpu().numpy(),
            x0.cpu().numpy(),
            self.classes,
            self.config.data.hu_range,
            png,
        )
        return {"val_loss": round(float(np.mean(losses)), 5)}

    def export(self, net, info, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        net["unet"].save_pretrained(out / "unet", safe_serialization=True)
        net["embedding"].save_pretrained(out / "condition_embedding", safe_serialization=True)
        self.scheduler.save_pretrained(out / "scheduler")
        card = ct_card(self.config.data, name=self.config.model_name, kind="label-diffusion", resolution=self.config.model.resolution,
                       description="CT axial slices (64 x 64 at 6 mm pixels by default) from a diffusers UNet2DConditionModel, conditioned on "
                       "class-presence tokens (which classes the slice shows). Synthetic output: not for diagnosis.",
                       training=training_record(self.config, info, self.data), metrics=info.metrics)  # fmt: skip
        write_card(card, out)


def validation_items(examples, n: int = _VAL_EXAMPLES) -> list[dict]:
    """``n`` centred, unablated examples spread evenly over the slices (complete ones first)."""
    pool = examples.complete or list(range(len(examples.slices)))
    picks = [pool[int(i)] for i in np.linspace(0, len(pool) - 1, min(n, len(pool)))]
    return [examples.example(k) for k in picks]


def ct_card(
    data, *, name: str, kind: str, resolution: int, description: str, training: dict, metrics: dict
) -> dict:
    """The model card of a CT label model (keys: ``core.pipelines.label_models``)."""
    from core.training.export import code_version

    trained = [s for s in data.sources if s.name not in data.holdout]
    return {
        "card_format": CARD_FORMAT, "name": name, "kind": kind, "domain": "ct", "description": description,
        "resolution": resolution, "channels": 1, "pixel_mm": data.pixel_mm, "intensity": {"hu_range": list(data.hu_range)},
        "latent": None, "classes": list(data.classes), "class_rules": {k: list(v) for k, v in data.class_rules},
        "derived_classes": {"air": "outside the body outline (HU > -400, largest component, holes filled)", "body": "inside it, no other class"},
        "prompt": {"kind": "class-presence", "prefix": list(PREFIX), "always": list(ALWAYS)},
        "training": training, "metrics": metrics, "licences": sorted({s.licence for s in trained}),
        "code_version": code_version(),
    }  # fmt: skip


def training_record(config, info, data) -> dict:
    from core.training.config import to_dict
    from core.training.export import machine
    from core.training.loop import config_history

    d = config.data
    return {
        "steps": info.step, "batch_size": config.batch_size * info.world_size, "wall_time_s": round(info.wall_time_s, 1),
        "machine": machine(), "seed": config.seed, "n_parameters": info.n_parameters,
        "data": [{"name": s.name, "licence": s.licence, "attribution": s.attribution} for s in d.sources if s.name not in d.holdout]
        + [{"name": Path(p).name, "pairs_folder": p} for p in d.pairs if Path(p).name not in d.holdout],
        "n_training_slices": len(data.slices), "holdout": list(d.holdout), "config": to_dict(config),
        "earlier_phases": config_history(config.out_dir),  # configs this run was resumed from
    }  # fmt: skip


def write_card(card: dict, out: Path) -> None:
    import json

    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")


def save_grid(
    controls, samples: np.ndarray, reals: np.ndarray, classes, hu_range, png: Path, *, window=(-160.0, 240.0)
) -> None:
    """Rows of (condition colours | sample | real), 2 columns; images ``(b, 1, r, r)`` in [-1, 1] (or RGB ``(b, 3, r, r)``)."""
    from PIL import Image

    from core.normalization import denormalize_hu
    from core.pipelines.label_condition import render_classes
    from core.windowing import apply_window

    def show(x):
        if x.shape[1] == 3:
            return np.round((np.moveaxis(x, 1, -1) + 1) * 127.5).clip(0, 255).astype(np.uint8)
        grey = apply_window(
            denormalize_hu(x[:, 0], low=hu_range[0], high=hu_range[1]), low=window[0], high=window[1]
        )
        return np.repeat(grey[..., None], 3, axis=-1)

    cond = np.stack([render_classes((c.argmax(0) + 1) * (c.sum(0) > 0), tuple(classes)) for c in controls])
    tiles = np.concatenate([cond, show(samples), show(reals)], axis=2)  # (b, r, 3r, 3)
    cols = 2 if len(tiles) > 4 else 1
    rows = math.ceil(len(tiles) / cols)
    tiles = np.concatenate([tiles, np.zeros((rows * cols - len(tiles), *tiles.shape[1:]), np.uint8)])
    grid = np.concatenate(
        [np.concatenate(list(tiles[c * rows : (c + 1) * rows]), axis=0) for c in range(cols)], axis=1
    )
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(png)


def train(config: LabelDiffusionConfig, *, progress: bool = True) -> Path:
    """Train (or resume) the base; returns ``<out_dir>/model``."""
    from core.training.loop import run_loop

    validate_data(config.data)
    validate_unet(config.model)
    return run_loop(LabelDiffusionTask(config), config, progress=progress)


def main(argv: list[str] | None = None) -> int:
    """``python -m core.training.train_label_diffusion CONFIG.json`` (what ``accelerate launch`` runs)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.training.train_label_diffusion CONFIG.json", file=sys.stderr)
        return 2
    print(train(load(LabelDiffusionConfig, args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
