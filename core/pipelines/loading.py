"""Reading and checking inpainting model folders (local paths only, never a hub id).

Layout: see ``core.training.export``. Without a ``model_card.json`` (a user's own
diffusers checkpoint) these defaults apply: HU range ``DEFAULT_HU_RANGE`` (wide, as
MAISI), crop fill ``DEFAULT_FILL``, input scale 1, resolution = the UNet's ``sample_size``, content
classes ``("tissue", "lesion")`` when the UNet has 2 class embeddings, else none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from core.errors import InputError

DEFAULT_HU_RANGE = (-1000.0, 1000.0)
DEFAULT_FILL = 0.5
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
CARD_NAME = "model_card.json"


@dataclass(frozen=True)
class ModelSpec:
    """What the pipeline needs to know about one model folder.

    Attributes:
        path: the folder.
        name: from the card, else the folder name.
        sha256: of the UNet weight file (identifies the model in provenance).
        resolution: model input side in px.
        hu_range: ``(low, high)`` HU mapped to [-1, 1].
        crop_fill: mask extent / crop side used to cut crops.
        content_classes: class names in class-label order; empty = unconditioned model.
        input_scale: the UNet sees ``input_scale`` x the [-1, 1] image (``ModelConfig.input_scale``).
        card: the model card as read (empty when absent).
    """

    path: Path
    name: str
    sha256: str
    resolution: int
    hu_range: tuple[float, float]
    crop_fill: float
    content_classes: tuple[str, ...]
    input_scale: float = 1.0
    card: dict = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256}


@lru_cache(maxsize=16)
def _file_sha256(path: Path, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_model_folder(path: str | Path) -> ModelSpec:
    """Check a model folder and read its settings.

    Raises:
        InputError: not a folder, or missing ``unet/``, weights or ``scheduler/``, or a UNet
            that is not a 3-in / 1-out ``UNet2DModel``; the message names what is missing.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(
            f"model folder {path} does not exist; give a folder written by `synthdx train inpaint` (it holds unet/ and scheduler/)"
        )
    if not path.is_dir():
        raise InputError(
            f"{path} is a file; --model needs a model folder holding unet/ and scheduler/ (diffusers save_pretrained layout)"
        )
    unet_cfg_path, sched_path = path / "unet" / "config.json", path / "scheduler" / "scheduler_config.json"
    weights = [path / "unet" / w for w in WEIGHT_FILES if (path / "unet" / w).is_file()]
    missing = [str(p.relative_to(path)) for p in (unet_cfg_path, sched_path) if not p.is_file()]
    if not weights:
        missing.append(f"unet/{WEIGHT_FILES[0]}")
    if missing:
        raise InputError(f"{path} is not an inpainting model folder: missing {', '.join(missing)}")
    try:
        unet_cfg = json.loads(unet_cfg_path.read_text())
        card = json.loads((path / CARD_NAME).read_text()) if (path / CARD_NAME).is_file() else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: a config or card file is not valid JSON ({exc})") from exc
    if (
        unet_cfg.get("_class_name") != "UNet2DModel"
        or unet_cfg.get("in_channels") != 3
        or unet_cfg.get("out_channels") != 1
    ):
        raise InputError(
            f"{path}: the UNet must be a diffusers UNet2DModel with 3 input channels (noisy target, masked image, "
            f"mask) and 1 output; got {unet_cfg.get('_class_name')} with in_channels={unet_cfg.get('in_channels')}, "
            f"out_channels={unet_cfg.get('out_channels')}"
        )
    inputs = card.get("inputs", {})
    sample_size = unet_cfg.get("sample_size") or 64
    resolution = int(
        inputs.get("resolution", sample_size if isinstance(sample_size, int) else sample_size[0])
    )
    classes = inputs.get("content_classes")
    if classes is None:
        classes = ["tissue", "lesion"] if unet_cfg.get("num_class_embeds") == 2 else []
    low, high = inputs.get("hu_range", DEFAULT_HU_RANGE)
    stat = weights[0].stat()
    return ModelSpec(
        path=path.resolve(),
        name=str(card.get("name", path.name)),
        sha256=_file_sha256(weights[0].resolve(), stat.st_mtime_ns, stat.st_size),
        resolution=resolution,
        hu_range=(float(low), float(high)),
        crop_fill=float(inputs.get("crop_fill", DEFAULT_FILL)),
        content_classes=tuple(classes),
        input_scale=float(inputs.get("input_scale", 1.0)),
        card=card,
    )


def load_unet(spec: ModelSpec, *, device: str = "cpu", dtype=None):
    """The folder's ``UNet2DModel`` in eval mode on ``device`` (local files only)."""
    import torch
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(
        spec.path / "unet", local_files_only=True, torch_dtype=dtype or torch.float32
    )
    return unet.to(device).eval()


def load_scheduler_config(spec: ModelSpec) -> dict:
    """The training noise schedule (``scheduler/scheduler_config.json``) as a dict."""
    return json.loads((spec.path / "scheduler" / "scheduler_config.json").read_text())
