"""Generate an image from a label map: a diffusers ``ControlNetModel`` on a ``UNet2DConditionModel``.

Why diffusers' ControlNet and not MONAI's (``monai.networks.nets.ControlNet`` for plain
``DiffusionModelUNet``s): one sampler and scheduler stack for the whole project (the
DDPM/DDIM/DPM-Solver++ schedulers the inpainting pipeline already uses); the SD-family
path (local SD 1.5/2.1 weights) needs diffusers' ``ControlNetModel`` anyway, so one
ControlNet trainer serves our CT base, the H&E latent base and SD folders; and
``ControlNetModel.from_unet`` initialises the ControlNet from the base's own encoder
(the recipe of Zhang et al. 2023) with zero convolutions, so training starts from the
base's behaviour. ``from_unet`` needs a ``UNet2DConditionModel``: our bases are one,
with a small learned token embedding (``condition_embedding/``) standing in for the text
encoder. Model folders are described in ``core.pipelines.label_models``; conditions in
``core.pipelines.label_condition``.

Example::

    pipe = ControlNetPipeline.from_pretrained("assets/models/ct-controlnet")
    out = pipe(class_map, num_inference_steps=25, seed=0, conditioning_scale=1.0)
    out.images[0]   # (64, 64) float32 HU (CT) or (r, r, 3) uint8 (RGB models)

Without a ``controlnet/`` the same pipeline samples the base alone (the label map then only
sets the class-presence prompt).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import InputError
from core.pipelines.label_condition import one_hot
from core.pipelines.label_models import LabelModel, load_label_model, prompt_for

Sampler = Literal["dpmsolver++", "ddim"]
SAMPLERS: tuple[str, ...] = ("dpmsolver++", "ddim")
PIPELINE_NAME = "synthdx.controlnet"
PIPELINE_VERSION = 1
ProgressFn = Callable[[int, int], None]


@dataclass
class LabelGenerationOutput:
    """Result of ``ControlNetPipeline.__call__`` (numpy only).

    Attributes:
        images: ``(n, r, r)`` float32 HU (CT) or ``(n, r, r, 3)`` uint8 RGB, one per seed.
        condition: ``(r, r)`` uint8 class map that was used (0 = free).
        provenance: JSON-able record: model (name, path, component hashes), seeds, sampler,
            steps, conditioning and guidance scales, prompt, condition hash, classes.
    """

    images: np.ndarray
    condition: np.ndarray
    provenance: dict = field(default_factory=dict)

    @property
    def image(self) -> np.ndarray:
        return self.images[0]


def make_scheduler(scheduler_config: dict, sampler: str, *, clip: bool = False):
    """The inference scheduler (``"dpmsolver++"`` 2nd order or ``"ddim"`` eta 0) from a training schedule.

    ``clip`` keeps every predicted clean image in [-1, 1] (pixel-space models). Without it an
    epsilon-predicting model on a cosine schedule divides by sqrt(alpha_bar) ~ 0 at the first
    step and its samples are saturated noise; latents are not bounded, so latent models pass False.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if sampler == "ddim":
        return DDIMScheduler.from_config(
            scheduler_config, timestep_spacing="trailing", clip_sample=clip, clip_sample_range=1.0
        )
    if sampler == "dpmsolver++":
        # thresholding with sample_max_value 1 is a plain clip of the data prediction to [-1, 1]
        return DPMSolverMultistepScheduler.from_config(
            scheduler_config,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            thresholding=clip,
            sample_max_value=1.0,
        )
    raise InputError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")


def denoise(
    unet,
    scheduler_config: dict,
    encoder_hidden_states,
    generators,
    shape: tuple[int, ...],
    *,
    controlnet=None,
    control=None,
    conditioning_scale: float = 1.0,
    num_inference_steps: int = 25,
    sampler: str = "dpmsolver++",
    guidance_scale: float = 1.0,
    uncond_hidden_states=None,
    clip: bool = True,
    on_step: Callable[[], None] | None = None,
):
    """The sampling loop (pixels or latents); used by the pipeline and by training validation.

    Args:
        unet: ``UNet2DConditionModel``.
        encoder_hidden_states: ``(b, L, dim)``.
        generators: one CPU ``torch.Generator`` per sample (a sample does not depend on its batch).
        shape: ``(channels, h, w)`` of one sample (latent shape for latent models).
        controlnet: ``ControlNetModel`` or None; control: ``(b, C, H, W)`` one-hot label maps.
        conditioning_scale: multiplies the ControlNet residuals (0 = base alone).
        guidance_scale: classifier-free guidance with ``uncond_hidden_states`` when > 1.
        clip: keep predicted clean samples in [-1, 1] (pixel models; False for latents).

    Returns:
        ``(b, *shape)`` float32 samples (model space: [-1, 1] pixels or latents).
    """
    import torch

    device = next(unet.parameters()).device
    sched = make_scheduler(scheduler_config, sampler, clip=clip)
    sched.set_timesteps(num_inference_steps, device=device)
    x = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device) * sched.init_noise_sigma
    cfg = guidance_scale > 1.0 and uncond_hidden_states is not None
    states = torch.cat([uncond_hidden_states, encoder_hidden_states]) if cfg else encoder_hidden_states
    cond = torch.cat([control, control]) if cfg and control is not None else control
    for t in sched.timesteps:
        inp = sched.scale_model_input(torch.cat([x, x]) if cfg else x, t)
        ts = torch.full((inp.shape[0],), int(t), device=device, dtype=torch.long)
        extra = {}
        with torch.no_grad():
            if controlnet is not None and conditioning_scale != 0:
                down, mid = controlnet(
                    inp, ts, states, cond, conditioning_scale=float(conditioning_scale), return_dict=False
                )
                extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            out = unet(inp, ts, states, **extra).sample
        if cfg:
            uncond, text = out.chunk(2)
            out = uncond + guidance_scale * (text - uncond)
        x = sched.step(out, t, x).prev_sample
        if on_step is not None:
            on_step()
    return x


def class_map_hash(classes: np.ndarray) -> str:
    a = np.ascontiguousarray(classes, dtype=np.uint8)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


class ControlNetPipeline:
    """Label map -> image with a model folder (``core.pipelines.label_models``).

    Args:
        model: the loaded components (``load_label_model``).
    """

    def __init__(self, model: LabelModel):
        self.model = model
        self.spec = model.spec

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu") -> ControlNetPipeline:
        """Load a local model folder (never a hub id); see ``read_label_model`` for what it must hold."""
        return cls(load_label_model(path, device=device))

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def check_inputs(
        self,
        control_image,
        num_inference_steps,
        sampler,
        seed,
        num_samples,
        conditioning_scale,
        guidance_scale,
    ) -> tuple[np.ndarray, list[int]]:
        """Validate a request; returns ``(class map uint8, seeds)``."""
        control = np.asarray(control_image)
        r = self.resolution
        if control.shape != (r, r):
            raise InputError(
                f"control_image must be a ({r}, {r}) class map at the model resolution, got shape {control.shape}; see core.pipelines.label_condition.load_condition"
            )
        if not (np.issubdtype(control.dtype, np.integer) or np.array_equal(control, np.round(control))):
            raise InputError("control_image must hold integer class ids (0 = free)")
        if control.min() < 0 or control.max() > len(self.classes):
            raise InputError(
                f"class ids must be 0..{len(self.classes)} for this model's classes {list(self.classes)}, got {control.min()}..{control.max()}"
            )
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
        if not 1 <= int(num_inference_steps) <= 1000:
            raise InputError(
                f"num_inference_steps must be 1..1000 (10-50 is typical), got {num_inference_steps}"
            )
        if not 0 <= float(conditioning_scale) <= 4:
            raise InputError(
                f"conditioning_scale must be in [0, 4] (1 = as trained), got {conditioning_scale}"
            )
        if float(guidance_scale) < 1:
            raise InputError(
                f"guidance_scale must be >= 1 (1 = no classifier-free guidance), got {guidance_scale}"
            )
        seeds = (
            [int(s) for s in seed]
            if isinstance(seed, (list, tuple))
            else [int(seed) + i for i in range(int(num_samples))]
        )
        if not seeds:
            raise InputError("num_samples must be >= 1")
        return control.astype(np.uint8), seeds

    def __call__(
        self,
        control_image: np.ndarray,
        *,
        num_inference_steps: int = 25,
        sampler: Sampler = "dpmsolver++",
        seed: int | list[int] = 0,
        num_samples: int = 1,
        conditioning_scale: float = 1.0,
        guidance_scale: float = 1.0,
        prompt: str | None = None,
        callback: ProgressFn | None = None,
    ) -> LabelGenerationOutput:
        """Generate ``num_samples`` images that follow ``control_image``.

        Args:
            control_image: ``(r, r)`` class ids at the model resolution (0 = free, i = ``classes[i - 1]``).
            num_inference_steps: sampler steps (10-50).
            sampler: ``"dpmsolver++"`` or ``"ddim"``.
            seed: one seed (sample i uses seed + i) or one seed per sample.
            num_samples: how many images (ignored when a list of seeds is given).
            conditioning_scale: strength of the ControlNet (0 = base model alone, 1 = as trained).
            guidance_scale: classifier-free guidance (1 = off).
            prompt: text for SD-family models (default: the card's); our token models ignore it.
            callback: ``callback(done, total)`` after each denoising step.

        Returns:
            ``LabelGenerationOutput``.

        Raises:
            InputError: wrong shape or class ids, sampler, steps or scales.
        """
        import torch

        # 1. Check inputs
        control, seeds = self.check_inputs(
            control_image, num_inference_steps, sampler, seed, num_samples, conditioning_scale, guidance_scale
        )
        n, m, spec = len(seeds), self.model, self.spec

        # 2. Prompt: class-presence tokens from the label map, fixed tokens, or text
        present = {self.classes[int(c) - 1] for c in np.unique(control) if c}
        text = prompt_for(spec, present, prompt)
        states = m.encode_prompt([text] * n)
        uncond = None
        if guidance_scale > 1:
            uncond = m.encode_prompt([""] * n if isinstance(text, str) else [["<pad>"] * len(text)] * n)

        # 3. Control image: one-hot at pixel resolution
        device = m.device
        cond = (
            torch.from_numpy(
                np.broadcast_to(
                    one_hot(control, len(self.classes)), (n, len(self.classes), *control.shape)
                ).copy()
            ).to(device)
            if m.controlnet is not None
            else None
        )

        # 4. Sample shape: pixels, or latents of the VAE
        if spec.latent:
            f = spec.latent["downsample"]
            shape = (m.unet.config.in_channels, self.resolution // f, self.resolution // f)
        else:
            shape = (m.unet.config.in_channels, self.resolution, self.resolution)
        done = [0]

        def tick() -> None:
            done[0] += 1
            if callback is not None:
                callback(done[0], int(num_inference_steps))

        # 5. Denoising loop
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        x = denoise(
            m.unet,
            m.scheduler_config,
            states,
            gens,
            shape,
            controlnet=m.controlnet,
            control=cond,
            conditioning_scale=conditioning_scale,
            num_inference_steps=int(num_inference_steps),
            sampler=sampler,
            guidance_scale=float(guidance_scale),
            uncond_hidden_states=uncond,
            clip=not spec.latent,
            on_step=tick,
        )

        # 6. Decode latents and map to HU or RGB
        images = self.to_images(x)

        # 7. Provenance
        provenance = {
            "pipeline": PIPELINE_NAME,
            "pipeline_version": PIPELINE_VERSION,
            "model": spec.as_dict(),
            "model_sha256": hashlib.sha256(json.dumps(spec.sha256, sort_keys=True).encode()).hexdigest(),
            "seeds": seeds,
            "sampler": sampler,
            "num_inference_steps": int(num_inference_steps),
            "conditioning_scale": float(conditioning_scale) if m.controlnet is not None else None,
            "guidance_scale": float(guidance_scale),
            "prompt": text,
            "condition_sha256": class_map_hash(control),
            "classes": list(self.classes),
            "resolution": self.resolution,
            "hu_range": list(spec.hu_range) if spec.hu_range else None,
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        return LabelGenerationOutput(images=images, condition=control, provenance=provenance)

    def to_images(self, x) -> np.ndarray:
        """Model-space samples -> ``(n, r, r)`` HU or ``(n, r, r, 3)`` uint8."""
        import torch

        m, spec = self.model, self.spec
        if spec.latent:
            shift = spec.latent.get("shift_factor") or 0.0
            with torch.no_grad():
                x = m.vae.decode(x / spec.latent["scaling_factor"] + shift).sample
        x = x.clamp(-1, 1).float().cpu().numpy()
        if spec.hu_range:
            from core.normalization import denormalize_hu

            return denormalize_hu(x[:, 0], low=spec.hu_range[0], high=spec.hu_range[1])
        return np.round((np.moveaxis(x, 1, -1) + 1) * 127.5).clip(0, 255).astype(np.uint8)
