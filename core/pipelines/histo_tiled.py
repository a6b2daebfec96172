"""H&E slides of any size from a tissue layout: MultiDiffusion-style tiled latent sampling.

The model (``core.training.train_he_tiles``; folder layout ``core.pipelines.label_models``)
makes 256 px tiles (64 x 64 latents). A larger image is one latent canvas covered by
overlapping windows; **at every denoising step** each window is denoised by the UNet (with
its ControlNet seeing the window's part of the layout) and the noise predictions of all
windows are averaged with Gaussian weights (``core.tiling``) before one DDIM step updates
the canvas. Neighbouring windows therefore agree on every intermediate latent and no
finished tiles are stitched (MultiDiffusion, Bar-Tal et al. 2023; Gaussian weights as
Graikos et al. and ZoomLDM use). The canvas is decoded the same way: overlapping VAE
windows blended with Gaussian weights, row band by row band.

Memory is bounded whatever the size: the only whole-image arrays are the latent canvas
(4 channels at 1/4 resolution, float32: as many bytes as the output has pixels) and the
layout; window predictions are merged into a band of about one window row and applied as
soon as no later window touches it; decoded pixels leave as uint8 bands, which
``core.io.slide_write.write_pyramid`` writes into a pyramidal OME-TIFF as they come.
Windows go through the networks ``window_batch`` at a time.

With ``overlap=0`` the same code is naive tiling (each window alone, tiles decoded
separately): the baseline of ``bench/slides.py``.

Example::

    pipe = HistoTiledPipeline.from_pretrained("assets/models/he-tiles")
    out = pipe(layout, height=4096, width=4096, tile_size=256, overlap=64, seed=0,
               output_dir="out/slide")   # slide.ome.tif, thumbnail.png, layout.png, provenance.json
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.tiling import GaussianMerger, Splitter, Window
from core.tissue import DEFAULT_CELL, TISSUE_CLASSES, check_layout, layout_to_rgb, resize_layout

PIPELINE_NAME = "synthdx.histo_tiled"
PIPELINE_VERSION = 1
MAX_SIDE = 65536  # pixels; the TIFF and the layout would still work, the CPU time would not
ProgressFn = Callable[[int, int, str], None]  # (done, total, stage "denoise" | "decode")


@dataclass
class HistoTiledOutput:
    """Result of ``HistoTiledPipeline.__call__``.

    Attributes:
        image: ``(height, width, 3)`` uint8 when no ``output_dir`` was given, else None.
        files: name -> path of what was written (``slide``, ``thumbnail``, ``layout``, ``provenance``).
        thumbnail: ``(h, w, 3)`` uint8 overview (longer side <= 1024).
        provenance: JSON-able record of model, layout, options, seed, timings and counts.
    """

    image: np.ndarray | None
    files: dict[str, Path] = field(default_factory=dict)
    thumbnail: np.ndarray | None = None
    provenance: dict = field(default_factory=dict)


def prompt_tokens(style: str | None, layout: np.ndarray) -> list[str]:
    """``he``, the style token (if any), then presence of each tissue class in ``layout`` (class ids 0..3)."""
    present = set(np.unique(layout).tolist())
    return [
        "he",
        *([f"style:{style}"] if style else []),
        *(f"{c}:{'present' if k in present else 'absent'}" for k, c in enumerate(TISSUE_CLASSES)),
    ]


def one_hot(labels, classes: int):
    """``(b, H, W)`` long labels (0 = free) -> ``(b, classes, H, W)`` float, free = all zero."""
    import torch.nn.functional as F

    return F.one_hot(labels, classes + 1)[..., 1:].permute(0, 3, 1, 2).float()


def _hash(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


class HistoTiledPipeline:
    """Layout -> H&E image of any size with a tiled latent model.

    Args:
        model: ``core.pipelines.label_models.LabelModel`` with a ``vae`` and a ``controlnet``.
    """

    def __init__(self, model):
        self.model = model
        spec = model.spec
        if model.vae is None or not spec.latent:
            raise InputError(
                f"{spec.path}: the tiled H&E pipeline needs a latent model (vae/ and a card 'latent' entry)"
            )
        if model.controlnet is None:
            raise InputError(
                f"{spec.path}: no controlnet/; the tiled pipeline follows the layout through the ControlNet"
            )
        if tuple(spec.classes) != TISSUE_CLASSES:
            raise InputError(
                f"{spec.path}: classes {list(spec.classes)} are not the tissue classes {list(TISSUE_CLASSES)}"
            )
        self.factor = int(spec.latent["downsample"])
        self.cell = int(spec.card.get("layout", {}).get("cell_px", DEFAULT_CELL))
        self.styles: dict[str, dict] = spec.card.get("styles", {})

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu") -> HistoTiledPipeline:
        from core.pipelines.label_models import load_label_model

        return cls(load_label_model(path, device=device))

    # ------------------------------------------------------------------ checks
    def check_inputs(
        self, layout, height, width, tile_size, overlap, num_inference_steps, seed, style, window_batch
    ) -> np.ndarray:
        """Validate a request; returns the layout as uint8 classes (``core.tissue``)."""
        layout = check_layout(np.asarray(layout) if not isinstance(layout, np.ndarray) else layout)
        step = self.factor * 8  # the UNet halves the latent three times
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not step <= v <= MAX_SIDE:
                raise InputError(f"{name} must be an integer from {step} to {MAX_SIDE} pixels, got {v!r}")
            if v % step:
                raise InputError(
                    f"{name} must be a multiple of {step} pixels, got {v}; use {v // step * step or step} or {(v // step + 1) * step}"
                )
        if (
            isinstance(tile_size, bool)
            or not isinstance(tile_size, (int, np.integer))
            or tile_size < step
            or tile_size % step
        ):
            raise InputError(f"tile size must be a multiple of {step} pixels (>= {step}), got {tile_size!r}")
        if (
            isinstance(overlap, bool)
            or not isinstance(overlap, (int, np.integer))
            or not 0 <= overlap < tile_size
            or overlap % self.factor
        ):
            raise InputError(
                f"overlap must be a multiple of {self.factor} pixels from 0 to less than the tile size {tile_size}, got {overlap!r}"
            )
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, (int, np.integer))
            or not 1 <= num_inference_steps <= 200
        ):
            raise InputError(f"steps must be an integer from 1 to 200, got {num_inference_steps!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise InputError(f"seed must be an integer >= 0, got {seed!r}")
        if style is not None and style not in self.styles:
            raise InputError(f"unknown style {style!r}; this model knows {list(self.styles)}")
        if (
            isinstance(window_batch, bool)
            or not isinstance(window_batch, (int, np.integer))
            or window_batch < 1
        ):
            raise InputError(f"window_batch must be an integer >= 1, got {window_batch!r}")
        return layout

    # ------------------------------------------------------------------ pieces
    def _window_conditions(self, layout: np.ndarray, wins: list[Window], style: str | None):
        """ControlNet one-hot ``(b, K, px, px)`` and prompt states ``(b, L, dim)`` for latent windows."""
        import torch

        f, cell = self.factor, self.cell
        labels, prompts = [], []
        for w in wins:
            p = w.scaled(f)  # pixel window
            cells = layout[p.y // cell : -(-(p.y + p.h) // cell), p.x // cell : -(-(p.x + p.w) // cell)]
            px = np.repeat(np.repeat(cells, cell, 0), cell, 1)
            oy, ox = p.y % cell, p.x % cell
            labels.append(px[oy : oy + p.h, ox : ox + p.w].astype(np.int64) + 1)
            prompts.append(prompt_tokens(style, cells))
        control = one_hot(torch.from_numpy(np.stack(labels)), len(TISSUE_CLASSES))
        states = self.model.encode_prompt(prompts)
        return control, states

    def _denoise(self, canvas, layout, style, splitter, sched, opts, progress, counts) -> None:
        """Tiled denoising of ``canvas`` ``(4, h, w)`` in place."""
        import torch

        m = self.model
        shape = tuple(canvas.shape[1:])
        rows = list(splitter.rows(shape))
        per_step = sum(len(r) for r, _ in rows)
        total = per_step * len(sched.timesteps)
        for i, t in enumerate(sched.timesteps):
            merger = GaussianMerger((canvas.shape[0], *shape), sigma_scale=opts["sigma_scale"])
            top = 0
            for wins, next_top in rows:
                for b in range(0, len(wins), opts["window_batch"]):
                    batch = wins[b : b + opts["window_batch"]]
                    x = torch.stack([canvas[:, w.y : w.y + w.h, w.x : w.x + w.w] for w in batch])
                    control, states = self._window_conditions(layout, batch, style)
                    x_in = sched.scale_model_input(x, t)
                    ts = torch.full((len(batch),), int(t), dtype=torch.long)
                    with torch.no_grad():
                        down, mid = m.controlnet(x_in, ts, states, control, return_dict=False)
                        eps = m.unet(
                            x_in,
                            ts,
                            states,
                            down_block_additional_residuals=down,
                            mid_block_additional_residual=mid,
                        ).sample
                    for w, e in zip(batch, eps.numpy()):
                        merger.aggregate(e, w)
                    counts["evaluations"] += len(batch)
                    counts["evaluated_latent_px"] += sum(w.h * w.w for w in batch)
                    if progress:
                        progress(counts["evaluations"], total, "denoise")
                band = torch.from_numpy(merger.flush(next_top))  # averaged prediction, rows [top, next_top)
                canvas[:, top:next_top] = sched.step(band, t, canvas[:, top:next_top]).prev_sample
                counts["max_held_rows"] = max(counts["max_held_rows"], merger.held_rows)
                top = next_top

    def _decode_bands(self, canvas, splitter: Splitter, opts, progress, counts) -> Iterator[np.ndarray]:
        """uint8 ``(rows, W, 3)`` bands of the decoded canvas (Gaussian-blended VAE windows)."""
        import torch

        m, f = self.model, self.factor
        shift = float(self.model.spec.latent.get("shift_factor") or 0.0)
        scale = float(self.model.spec.latent["scaling_factor"])
        h, w = canvas.shape[1:]
        merger = GaussianMerger((3, h * f, w * f), sigma_scale=opts["sigma_scale"])
        rows = list(splitter.rows((h, w)))
        total = sum(len(r) for r, _ in rows)
        done = 0
        for wins, next_top in rows:
            for b in range(0, len(wins), opts["decode_batch"]):
                batch = wins[b : b + opts["decode_batch"]]
                z = torch.stack([canvas[:, v.y : v.y + v.h, v.x : v.x + v.w] for v in batch]) / scale + shift
                with torch.no_grad():
                    rgb = m.vae.decode(z).sample.clamp(-1, 1).numpy()
                for v, r in zip(batch, rgb):
                    merger.aggregate(r, v.scaled(f))
                done += len(batch)
                counts["decoded_windows"] = done
                if progress:
                    progress(done, total, "decode")
            band = merger.flush(next_top * f)  # (3, rows, W) in [-1, 1]
            counts["max_held_pixel_rows"] = max(counts["max_held_pixel_rows"], merger.held_rows)
            yield np.clip(np.rint((band.transpose(1, 2, 0) + 1.0) * 127.5), 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ call
    def __call__(
        self,
        layout: np.ndarray,
        *,
        height: int,
        width: int,
        tile_size: int = 256,
        overlap: int = 64,
        num_inference_steps: int = 20,
        seed: int = 0,
        style: str | None = None,
        output_dir: str | Path | None = None,
        compression: str = "jpeg",
        window_batch: int = 8,
        decode_batch: int = 2,
        sigma_scale: float = 1 / 6,
        progress: ProgressFn | None = None,
    ) -> HistoTiledOutput:
        """Generate an H&E image following ``layout``.

        Args:
            layout: ``(rows, cols)`` tissue classes 0..3 (``core.tissue``), any shape: it is
                resized to one cell per ``cell_px`` (32) output pixels by majority vote.
            height: output height in pixels, a multiple of 32. width: likewise.
            tile_size: window side in pixels (the model was trained on 128 and 256).
            overlap: pixels shared by neighbouring windows (0 = naive tiling), a multiple of 4.
            num_inference_steps: DDIM steps.
            seed: the initial noise of the whole canvas (same seed and options = same image).
            style: stain style (``style:<name>`` token; the card's ``styles``); None = the first.
            output_dir: write ``slide.ome.tif`` (pyramidal, tiled), ``thumbnail.png``,
                ``layout.png`` and ``provenance.json`` there, streaming the pixels; None
                returns the image in memory instead.
            compression: TIFF compression, ``"jpeg"`` or ``"zlib"`` (lossless).
            window_batch: windows per UNet call (memory vs speed). decode_batch: per VAE call.
            sigma_scale: Gaussian weight sigma / window side (both fusions).
            progress: called as ``progress(done, total, stage)``.
        """
        import torch
        from diffusers import DDIMScheduler

        # 1. Check inputs
        layout = self.check_inputs(
            layout, height, width, tile_size, overlap, num_inference_steps, seed, style, window_batch
        )
        style = style or next(iter(self.styles), None)
        opts = {
            "window_batch": int(window_batch),
            "decode_batch": int(decode_batch),
            "sigma_scale": float(sigma_scale),
        }
        t0, started = time.time(), _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        # 2. Layout on the output grid: one cell per `cell` pixels
        grid = resize_layout(layout, (-(-height // self.cell), -(-width // self.cell)))
        # 3. Scheduler and initial noise of the whole latent canvas
        f = self.factor
        sched = DDIMScheduler.from_config(
            self.model.scheduler_config, timestep_spacing="trailing", clip_sample=False
        )
        sched.set_timesteps(int(num_inference_steps))
        gen = torch.Generator().manual_seed(int(seed))
        canvas = torch.randn(
            (int(self.model.spec.latent["channels"]), height // f, width // f), generator=gen
        )
        canvas = canvas * sched.init_noise_sigma
        splitter = Splitter(tile_size // f, overlap // f)
        counts = {
            "evaluations": 0,
            "evaluated_latent_px": 0,
            "max_held_rows": 0,
            "decoded_windows": 0,
            "max_held_pixel_rows": 0,
        }
        # 4. Denoising loop: every step averages all windows' predictions before the update
        self._denoise(canvas, grid, style, splitter, sched, opts, progress, counts)
        t_denoise = time.time() - t0
        # 5. Decode band by band, into the TIFF or into memory
        bands = self._decode_bands(canvas, splitter, opts, progress, counts)
        prov = self._provenance(
            grid, layout, height, width, tile_size, overlap, num_inference_steps, seed, style, started, opts
        )
        files: dict[str, Path] = {}
        if output_dir is None:
            image = np.concatenate(list(bands))
            thumb = image if max(image.shape[:2]) <= 1024 else None
        else:
            from PIL import Image

            from core.io.slide_write import write_pyramid

            out = Path(output_dir)
            out.mkdir(parents=True, exist_ok=True)
            mpp = self.styles.get(style, {}).get("mpp")
            info, thumb = write_pyramid(
                out / "slide.ome.tif",
                bands,
                width=width,
                height=height,
                compression=compression,
                mpp=mpp,
                name=f"synthetic H&E (synthdx, style {style}, seed {seed})",
            )
            image = None
            Image.fromarray(thumb).save(out / "thumbnail.png")
            Image.fromarray(layout_to_rgb(grid)).save(out / "layout.png")
            files = {
                "slide": info.path,
                "thumbnail": out / "thumbnail.png",
                "layout": out / "layout.png",
                "provenance": out / "provenance.json",
            }
            prov["output"] = {
                "levels": [list(s) for s in info.levels],
                "tile_px": info.tile,
                "compression": compression,
                "mpp": mpp,
                "mpp_note": self.styles.get(style, {}).get("mpp_note", ""),
            }
        # 6. Provenance with counts and timings
        naive = -(-height // tile_size) * -(-width // tile_size) * len(sched.timesteps)
        prov["counts"] = {
            **counts,
            "windows_per_step": counts["evaluations"] // len(sched.timesteps),
            "evaluations_per_pixel_vs_naive": round(counts["evaluations"] / naive, 4),
        }
        prov["time_s"] = {"denoise": round(t_denoise, 2), "total": round(time.time() - t0, 2)}
        if files:
            files["provenance"].write_text(json.dumps(prov, indent=2) + "\n")
        return HistoTiledOutput(image=image, files=files, thumbnail=thumb, provenance=prov)

    def _provenance(
        self, grid, layout, height, width, tile_size, overlap, steps, seed, style, started, opts
    ) -> dict:
        spec = self.model.spec
        return {
            "pipeline": PIPELINE_NAME, "pipeline_version": PIPELINE_VERSION, "synthetic": True,
            "created": started, "model": spec.as_dict(),
            "layout": {"input_shape": list(layout.shape), "grid_shape": list(grid.shape), "cell_px": self.cell,
                       "sha256": _hash(grid), "classes": list(TISSUE_CLASSES),
                       "fractions": {c: round(float((grid == k).mean()), 4) for k, c in enumerate(TISSUE_CLASSES)}},
            "size": [int(height), int(width)], "tile_px": int(tile_size), "overlap_px": int(overlap),
            "sampler": "ddim", "num_inference_steps": int(steps), "seed": int(seed), "style": style,
            "fusion": "gaussian-weighted average of window noise predictions at every step" if overlap else "none (naive tiling)",
            **opts,
        }  # fmt: skip
