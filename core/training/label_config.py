"""Configs of the label-conditioned trainings (``train label-diffusion``, ``train controlnet``).

Frozen dataclasses with JSON on disk, read and written by the helpers of
``core.training.config`` (unknown keys are an error naming the valid ones). A run writes
its config to ``<out_dir>/config.json`` and into the model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.errors import InputError
from core.pipelines.label_condition import CT_CLASS_RULES
from core.training.config import DataSource, from_dict
from core.training.loop import LoopSettings


@dataclass(frozen=True)
class LabelDataConfig:
    """Image + label-map pairs at the model resolution.

    Two kinds of data: CT ``sources`` (volumes with label maps, as ``core.training.data``
    finds them; axial slices are resampled to ``pixel_mm``) and ``pairs`` folders
    (``images/<name>.png|.npy`` + ``labels/<name>.png`` class ids + ``classes.json``, see
    ``core.training.label_data``), e.g. H&E tiles with their tissue layout.
    """

    sources: tuple[DataSource, ...] = ()
    pairs: tuple[str, ...] = ()  # pairs folders
    holdout: tuple[str, ...] = ()  # source names kept for validation and the report
    classes: tuple[str, ...] = tuple(CT_CLASS_RULES)  # control classes; class id = index + 1 (0 = free)
    class_rules: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
        CT_CLASS_RULES.items()
    )  # class -> name patterns
    hu_range: tuple[float, float] = (-1000.0, 1000.0)  # CT HU -> [-1, 1] (clipped)
    pixel_mm: float = 6.0  # CT slices are resampled to this pixel size (64 px = 38 cm: a whole abdomen)
    center_jitter_px: int = 4  # random shift of the canvas centre (augmentation)
    partial_weight: float = 0.25  # share of examples from sources labelled with lesions only (IBSI STS)
    free_body_p: float = 0.2  # condition ablation: air/body become free (label maps without a body outline)
    drop_class_p: float = 0.05  # condition ablation: each other class becomes free with this probability
    min_valid_fraction: float = 0.05  # slices whose non-air pixels cover less of the canvas are skipped

    def rules(self) -> dict[str, tuple[str, ...]]:
        return {k: tuple(v) for k, v in self.class_rules}


@dataclass(frozen=True)
class LabelUNetConfig:
    """The diffusers ``UNet2DConditionModel`` of the CT label-diffusion base and its DDPM schedule."""

    resolution: int = 64  # px
    block_out_channels: tuple[int, ...] = (32, 64, 96, 128)
    cross_attention_levels: tuple[bool, ...] = (
        False,
        False,
        False,
        True,
    )  # cross-attention at 8 x 8 (and the mid block)
    layers_per_block: int = 1
    norm_num_groups: int = 16
    cross_attention_dim: int = 64  # width of the condition tokens
    attention_head_dim: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"


@dataclass(frozen=True)
class LabelDiffusionConfig(LoopSettings):
    """One ``synthdx train label-diffusion`` run: the CT base conditioned on class-presence tokens.

    The loop's fields and their meaning: ``LoopSettings`` (``snapshot_steps``: e.g. a barely
    trained base for the ControlNet comparison)."""

    out_dir: str = "runs/ct-label-diffusion"
    model: LabelUNetConfig = field(default_factory=LabelUNetConfig)
    data: LabelDataConfig = field(default_factory=LabelDataConfig)
    steps: int = 4000
    learning_rate: float = 2e-4
    warmup_steps: int = 200
    prompt_dropout: float = 0.1  # share of examples with an all-<pad> prompt (unconditional)
    sample_every: int = 500
    sample_steps: int = 25
    model_name: str = "synthdx-ct-label-diffusion"


@dataclass(frozen=True)
class ControlNetConfig(LoopSettings):
    """One ``synthdx train controlnet`` run: a ControlNet on a frozen base model folder."""

    out_dir: str = "runs/ct-controlnet"
    base: str = ""  # base model folder (ours, or an SD-family folder on disk)
    regime: str = ""  # free text for the card, e.g. "domain-trained base" / "barely trained base"
    data: LabelDataConfig = field(default_factory=LabelDataConfig)
    prompt: str = ""  # SD-family bases: the text prompt; our bases derive tokens from the label map
    conditioning_embedding_channels: tuple[int, ...] = ()  # empty = from the latent downsample (see label_models)
    steps: int = 2000
    prompt_dropout: float = 0.0
    sample_every: int = 500
    sample_steps: int = 25
    model_name: str = "synthdx-ct-controlnet"


def load(cls, path: str | Path):
    """Read a config of class ``cls`` from JSON (missing keys take defaults)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path.name}: not valid JSON ({exc})") from exc
    return from_dict(cls, data)


def validate_data(d: LabelDataConfig) -> None:
    """Raise ``InputError`` for inconsistent data settings, naming the field."""
    if not d.sources and not d.pairs:
        raise InputError(
            "no training data: give --data (CT volumes with label maps, a manifest JSON) or --pairs (a pairs folder)"
        )
    names = [k for k, _ in d.class_rules]
    if d.sources and not set(d.classes) <= set(names):
        raise InputError(f"data.classes {sorted(set(d.classes) - set(names))} have no class_rules entry")
    if d.sources and not {"air", "body"} <= set(d.classes):
        raise InputError("CT sources need the derived classes 'air' and 'body' in data.classes")
    if not d.hu_range[1] > d.hu_range[0] or d.pixel_mm <= 0:
        raise InputError(
            f"data.hu_range must be (low, high) with high > low and pixel_mm > 0, got {d.hu_range}, {d.pixel_mm}"
        )
    for p in (d.partial_weight, d.free_body_p, d.drop_class_p, d.min_valid_fraction):
        if not 0 <= p <= 1:
            raise InputError(f"probabilities and fractions in data must be in [0, 1], got {p}")


def validate_unet(m: LabelUNetConfig) -> None:
    if len(m.cross_attention_levels) != len(m.block_out_channels):
        raise InputError(
            f"model.cross_attention_levels has {len(m.cross_attention_levels)} entries, block_out_channels {len(m.block_out_channels)}"
        )
    if m.resolution % 2 ** (len(m.block_out_channels) - 1):
        raise InputError(
            f"model.resolution {m.resolution} must be divisible by {2 ** (len(m.block_out_channels) - 1)}"
        )
    if any(c % m.norm_num_groups for c in m.block_out_channels):
        raise InputError(
            f"model.block_out_channels {m.block_out_channels} must be multiples of norm_num_groups {m.norm_num_groups}"
        )
