"""Configuration of the CT inpainting training: frozen dataclasses, JSON on disk.

A run's config is written to ``<out_dir>/config.json`` and into the model card, so a
model can be retrained from its card. ``load_config(path)`` reads one back (unknown keys
are an error naming the valid ones).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.errors import InputError
from core.training.loop import LoopSettings

MaskKind = Literal["lesion", "lesion_box", "organ", "box", "ellipse", "blob", "brush", "transplant"]
MASK_KINDS: tuple[str, ...] = typing.get_args(MaskKind)
# What the masked region holds, the model's class label: "tissue" (healthy anatomy, organs) = 0.
CONTENT_CLASSES: tuple[str, ...] = ("tissue", "lesion")
# Mask kinds whose region holds a lesion (class 1); the others are placed in lesion-free tissue.
LESION_KINDS: tuple[str, ...] = ("lesion", "lesion_box")


@dataclass(frozen=True)
class DataSource:
    """One CT volume with its masks.

    Attributes:
        image: volume path (NIfTI, DICOM folder, case folder) as ``load_volume`` reads it.
        labels: label map NIfTI or folder of organ masks; None for case folders.
        name: short name used for hold-out and in the model card (default: folder/file name).
        lesion_labels: label names (or ids as strings) that are lesions; empty = names
            containing tumor/lesion/mass/... (``core.masks.LESION_WORDS``).
        licence: licence of the image data, copied into the model card.
        attribution: citation / credit line for the model card.
    """

    image: str
    labels: str | None = None
    name: str = ""
    lesion_labels: tuple[str, ...] = ()
    licence: str = "unknown"
    attribution: str = ""


@dataclass(frozen=True)
class DataConfig:
    """Which data, which masks, and how crops are cut."""

    sources: tuple[DataSource, ...] = ()
    holdout: tuple[
        str, ...
    ] = ()  # source names never trained on; they feed the validation loss and sample grids
    hu_range: tuple[float, float] = (-1000.0, 1000.0)  # model input window, HU -> [-1, 1] ("wide", as MAISI)
    mask_mix: tuple[tuple[str, float], ...] = (  # (kind, weight); weights need not sum to 1
        ("lesion", 0.25),  # real tumour mask, slightly dilated at random -> content "lesion"
        ("lesion_box", 0.10),  # tumour bounding box + margin -> "lesion"
        ("organ", 0.15),  # an organ's mask -> "tissue"
        ("box", 0.10),  # lesion-sized box in lesion-free tissue (healthy negative) -> "tissue"
        ("transplant", 0.15),  # another case's tumour outline in an organ / the body -> "tissue"
        ("blob", 0.10),
        ("ellipse", 0.05),
        ("brush", 0.10),
    )
    fill_range: tuple[float, float] = (
        0.35,
        0.6,
    )  # mask extent / crop side, drawn per crop (inference uses 0.5)
    center_jitter: float = 0.1  # crop centre offset from the mask centre, fraction of the crop side
    flip_lr: bool = True  # mirror left-right half the time (anatomy is roughly symmetric)
    shape_library: tuple[
        str, ...
    ] = ()  # label maps (files or folders of cases) whose tumours are transplanted;
    #                                      empty = the lesion masks of the training sources
    shape_label: int = 2  # tumour id in the shape library (KiTS: 1 kidney, 2 tumor, 3 cyst)
    min_region_px: int = 40  # organs / lesions smaller than this on a slice are not used as masks
    border_px: int = 4  # random masks keep this far from the slice border


@dataclass(frozen=True)
class ModelConfig:
    """The diffusers ``UNet2DModel`` and its DDPM training schedule."""

    resolution: int = 64  # model input side in px; see core.pipelines.crops for how crops are scaled
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    attention_levels: tuple[bool, ...] = (
        False,
        False,
        False,
        True,
    )  # self-attention per level (8x8 only: cheap)
    layers_per_block: int = 1
    norm_num_groups: int = 16
    conditioning: Literal["content", "none"] = "content"  # class label tissue/lesion, or none
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    # The diffusion runs on input_scale x (HU normalised to [-1, 1]). With the wide window
    # soft tissue spans ~0.1 and CT grain ~0.01, far below the noise of the last sampler
    # steps; scaling the data up (Chen 2023, "On the importance of noise scheduling") moves
    # texture into the noise levels a 25-step sampler resolves.
    input_scale: float = 1.0


@dataclass(frozen=True)
class TrainConfig(LoopSettings):
    """One training run (``synthdx train inpaint``); the loop's fields and their meaning: ``LoopSettings``."""

    out_dir: str = "runs/ct-inpaint"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 20_000
    learning_rate: float = 2e-4
    warmup_steps: int = 500
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    loss_region: Literal["mask", "crop"] = "mask"  # where the noise-prediction MSE is averaged
    sample_every: int = 1000
    checkpoint_every: int = 1000
    sample_steps: int = 25  # DDIM steps for the sample grids
    model_name: str = "synthdx-ct-inpaint"


def to_dict(config) -> dict:
    """A config dataclass as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls, data: dict):
    """Build config dataclass ``cls`` from ``data`` (nested dicts/lists), rejecting unknown keys."""
    if not isinstance(data, dict):
        raise InputError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    return cls(**{k: _convert(hints[k], v, f"{cls.__name__}.{k}") for k, v in data.items()})


def _convert(tp, value, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if origin is Literal:
        if value not in args:
            raise InputError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise InputError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise InputError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def load_config(path: str | Path) -> TrainConfig:
    """Read a ``TrainConfig`` JSON (as written by ``save_config``; missing keys take defaults)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path.name}: not valid JSON ({exc})") from exc
    return from_dict(TrainConfig, data)


def validate(config: TrainConfig) -> None:
    """Raise ``InputError`` for inconsistent settings, naming the field and the fix."""
    m, d = config.model, config.data
    if len(m.attention_levels) != len(m.block_out_channels):
        raise InputError(
            f"model.attention_levels has {len(m.attention_levels)} entries, block_out_channels {len(m.block_out_channels)}"
        )
    if m.resolution % 2 ** (len(m.block_out_channels) - 1):
        raise InputError(
            f"model.resolution {m.resolution} must be divisible by {2 ** (len(m.block_out_channels) - 1)}"
        )
    if any(c % m.norm_num_groups for c in m.block_out_channels):
        raise InputError(
            f"model.block_out_channels {m.block_out_channels} must be multiples of norm_num_groups {m.norm_num_groups}"
        )
    if not m.input_scale > 0:
        raise InputError(f"model.input_scale must be > 0, got {m.input_scale}")
    if not d.hu_range[1] > d.hu_range[0]:
        raise InputError(f"data.hu_range must be (low, high) with high > low, got {d.hu_range}")
    bad = [k for k, _ in d.mask_mix if k not in MASK_KINDS]
    if bad or not d.mask_mix or any(w < 0 for _, w in d.mask_mix) or sum(w for _, w in d.mask_mix) <= 0:
        raise InputError(
            f"data.mask_mix must be (kind, weight >= 0) pairs with kinds from {list(MASK_KINDS)}, got {d.mask_mix}"
        )
    if not 0 < d.fill_range[0] <= d.fill_range[1] <= 1:
        raise InputError(f"data.fill_range must satisfy 0 < low <= high <= 1, got {d.fill_range}")
    if not d.sources:
        raise InputError(
            "no training data: give --data (a volume with masks, a folder of cases, or a manifest JSON)"
        )
    if config.steps < 1 or config.batch_size < 1:
        raise InputError(f"steps and batch_size must be >= 1, got {config.steps} and {config.batch_size}")
