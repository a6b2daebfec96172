"""Train the mask-conditioned CT inpainting UNet (diffusers ``UNet2DModel`` + DDPM) with accelerate.

Runs unchanged on CPU, one GPU or several::

    synthdx train inpaint --data ../shared/data/ct/ibsi_sts --out runs/sts --steps 2000
    synthdx train inpaint --config core/training/recipes/ct_inpaint_demo.json --data-root ../shared/data --out runs/demo
    accelerate launch -m core.training.train_inpaint runs/demo/config.json   # several GPUs

The loop (accelerate, EMA, checkpoints, exact resume) is ``core.training.loop``; this
module supplies the task: masked crops, the masked noise MSE, sample grids and the model
folder. A run folder holds ``config.json``, ``metrics.jsonl`` (loss per step, validation
loss), ``samples/step_NNNNNN.png`` (masked input | sample | truth for fixed validation
crops), ``checkpoints/step_NNNNNN/`` (accelerate state + EMA, resumable) and ``model/``
(the EMA weights as a model folder, see ``core.training.export``). Rerunning with the
same ``out_dir`` resumes from the newest checkpoint with the same data order and noise.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.training.config import TrainConfig, validate

_VAL_EXAMPLES = 8  # fixed validation crops (sample grids, validation loss)
_VAL_TIMESTEPS = (50, 200, 400, 600, 800)  # validation loss is averaged over these noise levels


def build_unet(model):
    """A fresh ``UNet2DModel`` for ``ModelConfig`` ``model`` (3 channels in, 1 out)."""
    from diffusers import UNet2DModel

    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in model.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(model.attention_levels))
    return UNet2DModel(
        sample_size=model.resolution,
        in_channels=3,  # noisy target, masked image, mask
        out_channels=1,
        block_out_channels=model.block_out_channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=model.layers_per_block,
        norm_num_groups=model.norm_num_groups,
        attention_head_dim=32,
        num_class_embeds=2 if model.conditioning == "content" else None,
    )


def build_noise_scheduler(model):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=model.num_train_timesteps,
        beta_schedule=model.beta_schedule,
        prediction_type=model.prediction_type,
        clip_sample=True,
        clip_sample_range=model.input_scale,  # x0 estimates are clipped to the scaled data range
    )


def _batch_to(batch: dict, device):
    return batch["image"].to(device), batch["mask"].to(device), batch["content"].to(device)


def diffusion_loss(
    unet,
    scheduler,
    image,
    mask,
    content,
    noise,
    timesteps,
    *,
    loss_region: str,
    conditioning: str,
    input_scale: float = 1.0,
):
    """MSE between the UNet's prediction and its target (noise, or v), averaged over the mask or the crop.

    Args:
        image: ``(b, 1, r, r)`` clean crops in [-1, 1]; mask ``(b, 1, r, r)`` {0, 1}; content ``(b,)``.
        noise: ``(b, 1, r, r)`` standard normal; timesteps ``(b,)`` long.
        input_scale: the diffusion runs on ``input_scale * image`` (``ModelConfig.input_scale``).
    """
    import torch.nn.functional as F

    image = image * input_scale
    noisy = scheduler.add_noise(image, noise, timesteps)
    inputs = torch_cat([noisy, image * (1 - mask), mask])
    pred = unet(inputs, timesteps, class_labels=content if conditioning == "content" else None).sample
    target = (
        noise
        if scheduler.config.prediction_type == "epsilon"
        else scheduler.get_velocity(image, noise, timesteps)
    )
    err = F.mse_loss(pred.float(), target.float(), reduction="none")
    if loss_region == "crop":
        return err.mean()
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


def torch_cat(tensors):
    import torch

    return torch.cat(tensors, dim=1)


class InpaintTask:
    """The inpainting UNet as a ``core.training.loop.Task``: masked crops, masked noise MSE, grids, model folders."""

    description = "train inpaint"

    def __init__(self, config: TrainConfig):
        from core.training.data import InpaintCrops, load_cases, load_shape_library

        self.config = config
        d = config.data
        train_sources = tuple(s for s in d.sources if s.name not in d.holdout)
        self.held = tuple(s for s in d.sources if s.name in d.holdout)
        self.cases = load_cases(train_sources, border_px=d.border_px)
        shapes = load_shape_library(d.shape_library, label=d.shape_label) if d.shape_library else None
        self.data = InpaintCrops(
            self.cases, d, resolution=config.model.resolution, seed=config.seed, shapes=shapes
        )
        val_cases = load_cases(self.held, border_px=d.border_px) if self.held else self.cases
        # Validation crops: lesions (when the hold-out has any) and blobs in tissue, at fixed seeds.
        val_mix = (
            (("lesion", 1.0), ("blob", 1.0)) if any(c.lesion.any() for c in val_cases) else (("blob", 1.0),)
        )
        val_data = InpaintCrops(
            val_cases,
            replace(d, mask_mix=val_mix),
            resolution=config.model.resolution,
            seed=config.seed + 1,
            shapes=list(self.data.shapes),
        )
        self.val_items = [val_data[i] for i in range(_VAL_EXAMPLES)]
        self.noise_scheduler = build_noise_scheduler(config.model)

    def build(self, device):
        return build_unet(self.config.model)

    def dataset(self):
        return self.data

    def summary(self) -> str:
        return f"{len(self.cases)} training cases ({len(self.data.lesion_slices)} lesion slices), {len(self.held)} held out"

    def loss(self, unet, batch: dict, gen, device):
        import torch

        image, mask, content = _batch_to(batch, device)
        noise = torch.randn(image.shape, generator=gen).to(device)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (image.shape[0],), generator=gen
        ).to(device)
        return diffusion_loss(
            unet,
            self.noise_scheduler,
            image,
            mask,
            content,
            noise,
            timesteps,
            loss_region=self.config.loss_region,
            conditioning=self.config.model.conditioning,
            input_scale=self.config.model.input_scale,
        )

    def validate(self, unet, step: int, png: Path, device) -> dict:
        return _validate(unet, self.noise_scheduler, self.val_items, self.config, png, device)

    def export(self, unet, info, out: Path) -> None:
        from core.training.export import build_card, export_model
        from core.training.loop import config_history

        card = build_card(
            self.config,
            step=info.step,
            wall_time_s=info.wall_time_s,
            metrics=info.metrics,
            n_parameters=info.n_parameters,
            data_names=[c.source.name for c in self.cases],
            world_size=info.world_size,
            earlier_phases=config_history(self.config.out_dir),
        )
        export_model(unet, self.noise_scheduler, card, out)


def train(config: TrainConfig, *, progress: bool = True) -> Path:
    """Train (or resume) a run; returns the exported model folder ``<out_dir>/model``.

    Args:
        config: the run; ``config.out_dir`` is created, and resumed from when it holds checkpoints.
        progress: show a tqdm bar (main process only).
    """
    from core.training.loop import run_loop

    validate(config)
    return run_loop(InpaintTask(config), config, progress=progress)


def _validate(ema_unet, noise_scheduler, items, config: TrainConfig, png: Path, device) -> dict:
    """Validation loss at fixed noise levels, and a sample grid: masked input | sample | truth."""
    import torch

    from core.pipelines.ct_inpaint import CTInpaintPipeline
    from core.pipelines.loading import ModelSpec

    image = torch.from_numpy(np.stack([it["image"] for it in items])).to(device)
    mask = torch.from_numpy(np.stack([it["mask"] for it in items])).to(device)
    content = torch.tensor([it["content"] for it in items], device=device)
    losses = []
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for t in _VAL_TIMESTEPS:
            noise = torch.randn(image.shape, generator=gen).to(device)
            ts = torch.full((image.shape[0],), t, dtype=torch.long, device=device)
            losses.append(
                float(
                    diffusion_loss(
                        ema_unet,
                        noise_scheduler,
                        image,
                        mask,
                        content,
                        noise,
                        ts,
                        loss_region="mask",
                        conditioning=config.model.conditioning,
                        input_scale=config.model.input_scale,
                    )
                )
            )
    spec = ModelSpec(
        Path(config.out_dir),
        config.model_name,
        "training",
        config.model.resolution,
        config.data.hu_range,
        0.5,
        ("tissue", "lesion") if config.model.conditioning == "content" else (),
        input_scale=config.model.input_scale,
    )
    pipe = CTInpaintPipeline([ema_unet], [spec], dict(noise_scheduler.config))
    gens = [torch.Generator().manual_seed(i) for i in range(len(items))]
    labels = content if config.model.conditioning == "content" else None
    sample = pipe.denoise(image, mask, labels, gens, num_inference_steps=config.sample_steps, sampler="ddim")
    save_grid(image.cpu().numpy(), mask.cpu().numpy(), sample.cpu().numpy(), config.data.hu_range, png)
    err_hu = (sample - image).abs() * (config.data.hu_range[1] - config.data.hu_range[0]) / 2
    return {
        "val_loss": round(float(np.mean(losses)), 5),
        "val_mae_hu_in_mask": round(float((err_hu * mask).sum() / mask.sum()), 1),
    }


def save_grid(
    image: np.ndarray, mask: np.ndarray, sample: np.ndarray, hu_range, png: Path, *, window=(-160.0, 240.0)
) -> None:
    """Rows of (masked input, sample, truth) crops in a soft-tissue window; inputs (b, 1, r, r) in [-1, 1]."""
    from PIL import Image

    from core.normalization import denormalize_hu
    from core.windowing import apply_window

    def show(x):
        return apply_window(
            denormalize_hu(x[:, 0], low=hu_range[0], high=hu_range[1]), low=window[0], high=window[1]
        )

    masked = show(image).copy()
    masked[mask[:, 0] > 0] = 0
    tiles = np.concatenate([masked, show(sample), show(image)], axis=2)  # (b, r, 3r)
    cols = 2 if len(tiles) > 4 else 1
    rows = math.ceil(len(tiles) / cols)
    tiles = np.concatenate([tiles, np.zeros((rows * cols - len(tiles), *tiles.shape[1:]), np.uint8)])
    grid = np.concatenate(
        [np.concatenate(list(tiles[c * rows : (c + 1) * rows]), axis=0) for c in range(cols)], axis=1
    )
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(png)


def main(argv: list[str] | None = None) -> int:
    """``python -m core.training.train_inpaint CONFIG.json`` (what ``accelerate launch`` runs)."""
    from core.training.config import load_config

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.training.train_inpaint CONFIG.json", file=sys.stderr)
        return 2
    print(train(load_config(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
