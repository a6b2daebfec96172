"""Train a ControlNet on a label map, on top of a frozen base model folder.

The base is any folder ``core.pipelines.label_models`` reads: our CT label-diffusion base
(pixel space, class-presence tokens), the H&E latent base (``vae/``), or a local SD-family
folder (CLIP text encoder, VAE). The ControlNet starts as a copy of the base UNet's encoder
(``ControlNetModel.from_unet``) with zero convolutions, sees the label map one-hot
(``core.pipelines.label_condition``) and is the only thing trained; the base, its
condition embedding or text encoder and its VAE stay frozen. Our users' two ways::

    # (1) directly on a generic or barely trained base (e.g. a snapshot of the base run)
    synthdx train controlnet --base runs/ct-label-diffusion/model_step_000300 --config core/training/recipes/ct_controlnet_demo.json --data-root ../shared/data --out runs/cn-barely
    # (2) on the domain-trained base
    synthdx train controlnet --base runs/ct-label-diffusion/model --config core/training/recipes/ct_controlnet_demo.json --data-root ../shared/data --out runs/cn-domain
    # an SD-family folder on disk with a pairs folder (images/ + labels/ + classes.json)
    synthdx train controlnet --base /models/sd15 --pairs data/he_pairs --prompt "an H&E stained tissue section" --out runs/cn-sd

The model folder holds ``controlnet/`` and a card that points at the base (path + hashes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from core.pipelines.label_models import (
    CARD_FORMAT,
    controlnet_embedding_channels,
    prompt_for,
    read_label_model,
)
from core.training.label_config import ControlNetConfig, load, validate_data
from core.training.train_label_diffusion import (
    diffusion_target,
    masked_mse,
    save_grid,
    training_record,
    validation_items,
    write_card,
)

_VAL_TIMESTEPS = (50, 200, 400, 600, 800)


class ControlNetTask:
    """``core.training.loop.Task``: only the ControlNet is trained; base UNet, conditioner and VAE are frozen."""

    description = "train controlnet"

    def __init__(self, config: ControlNetConfig):
        from core.training.label_data import load_examples

        self.config = config
        self.base = read_label_model(config.base)
        d = config.data
        self.classes = tuple(d.classes)
        r = self.base.resolution
        self.data = load_examples(d, resolution=r, seed=config.seed)
        self.val = (
            load_examples(d, resolution=r, seed=config.seed + 1, holdout=True) if d.holdout else self.data
        )
        self.val_items = validation_items(self.val)
        if self.data.channels != self.base.channels:
            raise ValueError(
                f"the data have {self.data.channels} channel(s) but the base model {self.base.path} makes {self.base.channels}"
            )

    def build(self, device):
        import torch
        from diffusers import ControlNetModel

        from core.pipelines.label_models import load_label_model

        self.frozen = load_label_model(self.base, device=str(device), with_controlnet=False)
        parts = [self.frozen.unet, self.frozen.vae] + (
            [self.frozen.conditioner]
            if not isinstance(self.frozen.conditioner, tuple)
            else list(self.frozen.conditioner[1:])
        )
        for part in parts:
            if part is not None:
                part.requires_grad_(False).eval()
        from diffusers import DDPMScheduler

        self.scheduler = DDPMScheduler.from_config(self.frozen.scheduler_config)
        downsample = self.base.latent["downsample"] if self.base.latent else 1
        channels = tuple(self.config.conditioning_embedding_channels) or controlnet_embedding_channels(
            downsample
        )
        cn = ControlNetModel.from_unet(
            self.frozen.unet,
            conditioning_channels=len(self.classes),
            conditioning_embedding_out_channels=channels,
        )
        return torch.nn.ModuleDict({"controlnet": cn})

    def dataset(self):
        return self.data

    def summary(self) -> str:
        held = len(self.val.slices) if self.val is not self.data else 0
        return f"base {self.base.name} ({self.base.path}); {len(self.data.slices)} training examples, {held} held out; {len(self.classes)} control classes"

    # ---------------------------------------------------------------- pieces
    def prompts(self, control) -> list:
        """Per example: the base's prompt for the classes on the (ablated) control map."""
        on = control.flatten(2).amax(-1).cpu().numpy() > 0.5  # (b, C)
        return [
            prompt_for(self.base, {self.classes[k] for k in np.nonzero(row)[0]}, self.config.prompt or None)
            for row in on
        ]

    def hidden_states(self, prompts: list, drop=None):
        import torch

        if drop is not None and drop.any():
            empty = "" if isinstance(prompts[0], str) else ["<pad>"] * len(prompts[0])
            prompts = [empty if dr else p for p, dr in zip(prompts, drop.tolist())]
        with torch.no_grad():
            return self.frozen.encode_prompt(prompts)

    def to_model_space(self, image, gen):
        """Pixels in [-1, 1] -> the base's sample space (VAE latents when it has a VAE)."""
        import torch

        if not self.base.latent:
            return image
        lat = self.base.latent
        with torch.no_grad():
            z = self.frozen.vae.encode(image).latent_dist.sample(generator=gen)
        return (z - (lat.get("shift_factor") or 0.0)) * lat["scaling_factor"]

    def predict(self, net, noisy, t, states, control):
        down, mid = net["controlnet"](noisy, t, states, control, return_dict=False)
        return self.frozen.unet(
            noisy, t, states, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample

    @staticmethod
    def valid_at(valid, size: int):
        import torch.nn.functional as F

        return valid if valid.shape[-1] == size else (F.adaptive_avg_pool2d(valid, size) > 0.999).float()

    # ---------------------------------------------------------------- task
    def loss(self, net, batch: dict, gen, device):
        import torch

        image, control, valid = (
            batch["image"].to(device),
            batch["control"].to(device),
            batch["valid"].to(device),
        )
        x0 = self.to_model_space(image, gen)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(
            device
        )
        drop = torch.rand(x0.shape[0], generator=gen) < self.config.prompt_dropout
        states = self.hidden_states(self.prompts(control), drop)
        pred = self.predict(net, self.scheduler.add_noise(x0, noise, t), t, states, control)
        return masked_mse(
            pred, diffusion_target(self.scheduler, x0, noise, t), self.valid_at(valid, x0.shape[-1])
        )

    def validate(self, net, step: int, png: Path, device) -> dict:
        import torch

        from core.pipelines.controlnet import ControlNetPipeline
        from core.pipelines.label_models import LabelModel

        image, control, valid = (
            torch.from_numpy(np.stack([it[k] for it in self.val_items])).to(device)
            for k in ("image", "control", "valid")
        )
        gen = torch.Generator().manual_seed(1234)
        x0 = self.to_model_space(image, gen)
        states = self.hidden_states(self.prompts(control))
        losses = []
        for t in _VAL_TIMESTEPS:
            noise = torch.randn(x0.shape, generator=gen).to(device)
            ts = torch.full((x0.shape[0],), t, dtype=torch.long, device=device)
            pred = self.predict(net, self.scheduler.add_noise(x0, noise, ts), ts, states, control)
            losses.append(
                float(
                    masked_mse(
                        pred,
                        diffusion_target(self.scheduler, x0, noise, ts),
                        self.valid_at(valid, x0.shape[-1]),
                    )
                )
            )
        f = self.frozen
        pipe = ControlNetPipeline(
            LabelModel(self.base, f.unet, f.scheduler_config, f.conditioner, f.vae, net["controlnet"])
        )
        pipe.spec = pipe.model.spec = self.card_spec()
        samples = []
        for i, it in enumerate(self.val_items):
            cls = ((it["control"].argmax(0) + 1) * (it["control"].sum(0) > 0)).astype(np.uint8)
            out = pipe(cls, num_inference_steps=self.config.sample_steps, sampler="ddim", seed=i)
            samples.append(self.to_unit(out.images))
        save_grid(
            [it["control"] for it in self.val_items],
            np.concatenate(samples),
            image.cpu().numpy(),
            self.classes,
            self.config.data.hu_range,
            png,
        )
        return {"val_loss": round(float(np.mean(losses)), 5)}

    def card_spec(self):
        """The base's spec with the ControlNet's classes (what the exported folder will read as)."""
        from dataclasses import replace

        return replace(
            self.base, classes=self.classes, class_rules=self.config.data.rules(), prompt=self.prompt_rule()
        )

    def prompt_rule(self) -> dict:
        if self.base.prompt.get("kind") == "text" and self.config.prompt:
            return {"kind": "text", "default": self.config.prompt}
        return dict(self.base.prompt)

    def to_unit(self, images: np.ndarray) -> np.ndarray:
        """Pipeline output (HU or uint8 RGB) -> ``(n, ch, r, r)`` in [-1, 1] for the grid."""
        from core.normalization import normalize_hu

        if images.ndim == 4:
            return np.moveaxis(images.astype(np.float32) / 127.5 - 1, -1, 1)
        low, high = self.config.data.hu_range
        return normalize_hu(images, low=low, high=high)[:, None]

    def export(self, net, info, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        net["controlnet"].save_pretrained(out / "controlnet", safe_serialization=True)
        write_card(controlnet_card(self, info), out)


def controlnet_card(task: ControlNetTask, info) -> dict:
    """Card of a ControlNet folder: the base by relative path and component hashes, plus training and data."""
    from core.training.export import code_version

    base, cfg, d = task.base, task.config, task.config.data
    out = Path(cfg.out_dir) / "model"
    trained = [s for s in d.sources if s.name not in d.holdout]
    return {
        "card_format": CARD_FORMAT, "name": cfg.model_name, "kind": "controlnet", "domain": base.domain,
        "description": f"ControlNet on a one-hot label map ({len(task.classes)} classes) for the base model {base.name}; "
        "the base is loaded from 'base.path' and checked by hash. Synthetic output: not for diagnosis.",
        "base": {"path": os.path.relpath(base.path, out.resolve()), "name": base.name, "sha256": dict(base.sha256),
                 "steps": base.card.get("training", {}).get("steps")},
        "resolution": base.resolution, "channels": base.channels, "pixel_mm": d.pixel_mm if d.sources else base.card.get("pixel_mm"),
        "intensity": base.card.get("intensity") or ({"hu_range": list(base.hu_range)} if base.hu_range else {"rgb": "x / 127.5 - 1"}),
        "latent": base.latent, "classes": list(task.classes), "class_rules": {k: list(v) for k, v in d.class_rules},
        "derived_classes": base.card.get("derived_classes", {}), "prompt": task.prompt_rule(),
        "control": {"encoding": "one-hot", "free": "all-zero (class id 0)", "regime": cfg.regime,
                    "ablation": {"free_body_p": d.free_body_p, "drop_class_p": d.drop_class_p}},
        "training": training_record(cfg, info, task.data), "metrics": info.metrics,
        "licences": sorted({s.licence for s in trained} | set(base.card.get("licences", []))),
        "code_version": code_version(),
    }  # fmt: skip


def train(config: ControlNetConfig, *, progress: bool = True) -> Path:
    """Train (or resume) a ControlNet; returns ``<out_dir>/model``."""
    from core.errors import InputError
    from core.training.loop import run_loop

    if not config.base:
        raise InputError(
            "give --base: the model folder the ControlNet is trained on (ours, or an SD-family folder on disk)"
        )
    validate_data(config.data)
    return run_loop(ControlNetTask(config), config, progress=progress)


def main(argv: list[str] | None = None) -> int:
    """``python -m core.training.train_controlnet CONFIG.json`` (what ``accelerate launch`` runs)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.training.train_controlnet CONFIG.json", file=sys.stderr)
        return 2
    print(train(load(ControlNetConfig, args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
