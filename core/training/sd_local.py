"""Fine-tune SD-family weights that are already on disk (LoRA via peft, or the full UNet).

Users with SD 1.5/2.1-style folders (``unet/ vae/ text_encoder/ tokenizer/ scheduler/``)
adapt them to their images without a hub: every component is read with
``from_pretrained(local_dir, local_files_only=True)``; a hub id is refused because the
path must exist. The fine-tuned model is a model folder (``core.pipelines.label_models``)
holding only what changed, ``unet_lora/`` (``save_lora_adapter``; loaded and fused by
``load_component``) or ``unet/``, and a card that points at the SD folder by path and
hashes. A ControlNet is then trained on it (or on the SD folder directly) with
``synthdx train controlnet --base <folder>``::

    synthdx train sd-finetune --base /models/sd15 --pairs data/he_pairs --prompt "H&E stained tissue" --lora-rank 8 --out runs/sd-he
    synthdx train controlnet --base runs/sd-he/model --pairs data/he_pairs --out runs/cn-sd-he

Images come from a pairs folder (``core.training.label_data``; the label maps are not
used here), scaled to [-1, 1] RGB and encoded by the frozen VAE; the text encoder is frozen.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.pipelines.label_models import CARD_FORMAT, read_label_model
from core.training.label_config import LabelDataConfig, load, validate_data
from core.training.loop import LoopSettings
from core.training.train_label_diffusion import diffusion_target, masked_mse, training_record, write_card

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections, as diffusers' LoRA examples


@dataclass(frozen=True)
class FinetuneConfig(LoopSettings):
    """One ``synthdx train sd-finetune`` run; the loop's fields and their meaning: ``LoopSettings``."""

    out_dir: str = "runs/sd-finetune"
    base: str = ""  # the SD-family folder on disk
    data: LabelDataConfig = field(default_factory=lambda: LabelDataConfig(classes=(), class_rules=()))
    prompt: str = ""  # text for every image
    lora_rank: int = 8  # 0 = full fine-tune of the UNet
    lora_alpha: int = 0  # 0 = lora_rank (scale 1)
    resolution: int = 0  # training square in px; 0 = the base's
    batch_size: int = 4
    warmup_steps: int = 50
    ema_decay: float = 0.0  # LoRA: no EMA by default
    prompt_dropout: float = 0.1  # empty prompt for this share (keeps classifier-free guidance working)
    sample_steps: int = 25
    model_name: str = "synthdx-sd-finetune"


def check_local_folder(path: str | Path):
    """The SD folder's spec; a hub id or missing folder is an ``InputError`` saying what is needed."""
    p = Path(str(path)).expanduser()
    if not p.is_dir():
        raise InputError(
            f"--base {path}: not a folder on disk; give the path of a local SD-family folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/); hub ids are not used"
        )
    spec = read_label_model(p)
    if not spec.latent:
        raise InputError(f"{p}: no vae/; SD-family fine-tuning needs the VAE next to the UNet")
    return spec


class FinetuneTask:
    """``core.training.loop.Task``: LoRA adapters (or the whole UNet) trained on VAE latents of the images."""

    description = "train sd-finetune"

    def __init__(self, config: FinetuneConfig):
        from dataclasses import replace

        from core.training.label_data import load_examples

        self.config = config
        self.base = check_local_folder(config.base)
        r = config.resolution or self.base.resolution
        f = self.base.latent["downsample"]
        if r % (8 * f):
            raise InputError(
                f"resolution {r} must be a multiple of {8 * f} (VAE downsample {f} x 8 for the UNet)"
            )
        data = config.data
        if data.pairs and not data.classes:
            from core.training.label_data import read_pairs_classes

            data = replace(data, classes=tuple(read_pairs_classes(data.pairs[0])["classes"]))
        self.data = load_examples(data, resolution=r, seed=config.seed)
        self.resolution = r
        self.val_items = [self.data.example(k) for k in range(min(4, len(self.data.slices)))]

    def build(self, device):
        import torch
        from diffusers import DDPMScheduler

        from core.pipelines.label_models import load_component, load_label_model

        self.frozen = load_label_model(self.base, device=str(device), with_controlnet=False)
        for part in (self.frozen.vae, self.frozen.conditioner[1]):
            part.requires_grad_(False).eval()
        self.scheduler = DDPMScheduler.from_config(self.frozen.scheduler_config)
        unet = load_component(self.base, "unet", device=str(device))
        if self.config.lora_rank > 0:
            from peft import LoraConfig

            unet.requires_grad_(False)
            rank = self.config.lora_rank
            unet.add_adapter(
                LoraConfig(
                    r=rank,
                    lora_alpha=self.config.lora_alpha or rank,
                    init_lora_weights="gaussian",
                    target_modules=list(LORA_TARGETS),
                )
            )
        return torch.nn.ModuleDict({"unet": unet.train()})

    def dataset(self):
        return self.data

    def summary(self) -> str:
        how = f"LoRA rank {self.config.lora_rank}" if self.config.lora_rank else "full UNet"
        return f"{how} on {self.base.path}; {len(self.data.slices)} images at {self.resolution} px"

    def latents(self, image, gen):
        import torch

        lat = self.base.latent
        with torch.no_grad():
            z = self.frozen.vae.encode(image).latent_dist.sample(generator=gen)
        return (z - (lat.get("shift_factor") or 0.0)) * lat["scaling_factor"]

    def loss(self, net, batch: dict, gen, device):
        import torch
        import torch.nn.functional as F

        image, valid = batch["image"].to(device), batch["valid"].to(device)
        x0 = self.latents(image, gen)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(
            device
        )
        drop = torch.rand(x0.shape[0], generator=gen) < self.config.prompt_dropout
        with torch.no_grad():
            states = self.frozen.encode_prompt(["" if d else self.config.prompt for d in drop.tolist()])
        pred = net["unet"](self.scheduler.add_noise(x0, noise, t), t, states).sample
        valid = (F.adaptive_avg_pool2d(valid, x0.shape[-1]) > 0.999).float()
        return masked_mse(pred, diffusion_target(self.scheduler, x0, noise, t), valid)

    def validate(self, net, step: int, png: Path, device) -> dict:
        import torch
        from PIL import Image

        from core.pipelines.controlnet import denoise

        f = self.base.latent["downsample"]
        shape = (net["unet"].config.in_channels, self.resolution // f, self.resolution // f)
        gens = [torch.Generator().manual_seed(i) for i in range(len(self.val_items))]
        states = self.frozen.encode_prompt([self.config.prompt] * len(gens))
        z = denoise(
            net["unet"],
            self.frozen.scheduler_config,
            states,
            gens,
            shape,
            num_inference_steps=self.config.sample_steps,
            sampler="ddim",
            clip=False,  # latents are not bounded
        )
        lat = self.base.latent
        x = self.frozen.vae.decode(z / lat["scaling_factor"] + (lat.get("shift_factor") or 0.0)).sample.clamp(
            -1, 1
        )
        fake = np.round((x.permute(0, 2, 3, 1).cpu().numpy() + 1) * 127.5).astype(np.uint8)
        real = np.stack(
            [
                np.round((np.moveaxis(it["image"], 0, -1) + 1) * 127.5).clip(0, 255).astype(np.uint8)
                for it in self.val_items
            ]
        )
        if fake.shape[-1] != real.shape[-1]:
            fake, real = np.repeat(fake[..., :1], 3, -1), np.repeat(real[..., :1], 3, -1)
        Image.fromarray(
            np.concatenate([np.concatenate(list(fake), 1), np.concatenate(list(real), 1)], 0)
        ).save(png)
        return {}

    def export(self, net, info, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        if self.config.lora_rank > 0:
            net["unet"].save_lora_adapter(str(out / "unet_lora"))
        else:
            net["unet"].save_pretrained(out / "unet", safe_serialization=True)
        write_card(finetune_card(self, info), out)


def finetune_card(task: FinetuneTask, info) -> dict:
    from core.training.export import code_version

    base, cfg = task.base, task.config
    out = (Path(cfg.out_dir) / "model").resolve()
    return {
        "card_format": CARD_FORMAT, "name": cfg.model_name, "kind": "sd-finetune", "domain": base.domain,
        "description": f"{f'LoRA (rank {cfg.lora_rank})' if cfg.lora_rank else 'Full'} fine-tune of the UNet of {base.path.name} "
        "on local images; other components are the base's.",
        "base": {"path": os.path.relpath(base.path, out), "name": base.name, "sha256": dict(base.sha256)},
        "resolution": task.resolution, "channels": 3, "intensity": {"rgb": "x / 127.5 - 1"}, "latent": base.latent,
        "classes": list(base.classes), "prompt": {"kind": "text", "default": cfg.prompt},
        "training": training_record(cfg, info, task.data), "metrics": info.metrics,
        "licences": sorted(set(base.card.get("licences", [])) | ({"unknown"} if not base.card else set())),
        "code_version": code_version(),
    }  # fmt: skip


def finetune(config: FinetuneConfig, *, progress: bool = True) -> Path:
    """Fine-tune (or resume); returns ``<out_dir>/model``."""
    from core.training.loop import run_loop

    if not config.base:
        raise InputError("give --base: the SD-family folder on disk to fine-tune")
    if not config.data.pairs:
        raise InputError("give --pairs: a folder with images/ (and labels/, classes.json) to fine-tune on")
    validate_data(config.data)
    return run_loop(FinetuneTask(config), config, progress=progress)


def main(argv: list[str] | None = None) -> int:
    """``python -m core.training.sd_local CONFIG.json`` (what ``accelerate launch`` runs)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.training.sd_local CONFIG.json", file=sys.stderr)
        return 2
    print(finetune(load(FinetuneConfig, args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
