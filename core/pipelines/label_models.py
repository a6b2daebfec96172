"""Model folders of the label- and layout-conditioned generators (CT and H&E share one layout).

Used by the CT label-diffusion base, the H&E latent base, the ControlNets trained on
either (``synthdx train controlnet``) and fine-tuned SD-family weights. A model folder is
a diffusers-style directory; every component is written with ``save_pretrained`` in
safetensors and read with ``from_pretrained(path, local_files_only=True)``, never a hub id::

    <dir>/model_card.json                     # settings + provenance (keys below)
    <dir>/unet/                               # UNet2DConditionModel (noise or v prediction)
    <dir>/scheduler/scheduler_config.json     # the DDPM training schedule (any diffusers scheduler config)
    <dir>/condition_embedding/                # ConditionEmbedding: learned tokens standing in for text
    <dir>/vae/                                # optional AutoencoderKL: the UNet works in its latent space
    <dir>/controlnet/                         # optional ControlNetModel on a label map
    <dir>/text_encoder/ + <dir>/tokenizer/    # SD-family folders: CLIPTextModel + CLIPTokenizer
    <dir>/unet_lora/                          # optional LoRA adapter on the UNet (save_lora_adapter)

**Bases.** A folder may leave out components that its base holds: ``card["base"] =
{"path": ..., "sha256": {component: hash}}`` (path relative to the folder, or absolute).
The loader takes each missing component except ``controlnet/`` from the base
(recursively) and checks the hashes, so a ControlNet folder ships only ``controlnet/`` +
card and never runs on a base other than the one it was trained on.
A plain SD 1.5/2.1 folder (``unet/ vae/ text_encoder/ tokenizer/ scheduler/``, no card)
is a valid base: defaults below apply.

**Label maps.** A control image is an integer label image at the model resolution:
0 = *free* (unspecified: the model decides), ``i >= 1`` = ``classes[i - 1]``. The
ControlNet sees it one-hot, ``(len(classes), H, W)`` float, channel ``i - 1`` = 1 where the
label is ``i``; free pixels are all-zero. ``class_rules`` say which names of a source label
map (TotalSegmentator, KiTS, a tissue layout) fall into which class (``fnmatch`` patterns).

**Card keys** (``model_card.json``; ``card_format`` 1):

* ``name``; ``kind``: ``"label-diffusion"`` | ``"latent-diffusion"`` | ``"controlnet"`` | ``"sd-finetune"``;
  ``domain``: ``"ct"`` | ``"he"`` | ``"rgb"``; ``description``.
* ``resolution``: output side in pixels (latent side = resolution / ``latent.downsample``);
  ``channels``: 1 (CT, HU) or 3 (RGB); ``pixel_mm``: physical pixel size, when known.
* ``intensity``: ``{"hu_range": [low, high]}`` (HU clipped and mapped to [-1, 1]) or
  ``{"rgb": "x / 127.5 - 1"}`` (uint8 RGB mapped to [-1, 1]).
* ``latent``: null, or ``{"downsample": 8, "channels": 4, "scaling_factor": 0.18215,
  "shift_factor": null}`` (latents = (vae mean - shift) * scale).
* ``classes``: control class names (see label maps); ``class_rules``: ``{class: [patterns]}``.
* ``prompt``: how ``encoder_hidden_states`` are made: ``{"kind": "class-presence",
  "prefix": ["ct"]}`` (prefix tokens, then ``"<class>:present"``/``"<class>:absent"`` for
  each class except ``always`` ones), ``{"kind": "fixed", "tokens": [...]}``, or
  ``{"kind": "text", "default": "..."}`` (SD text encoders).
* ``control`` (ControlNet folders): ``{"encoding": "one-hot", "regime": ..., "base": ...}``.
* ``training`` (steps, batch size, wall time, machine, seed, parameters, data with
  licences and attribution, config), ``metrics``, ``licences``, ``code_version``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InputError

CARD_NAME = "model_card.json"
CARD_FORMAT = 1
PAD = "<pad>"
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
COMPONENTS = (
    "unet",
    "scheduler",
    "condition_embedding",
    "vae",
    "controlnet",
    "text_encoder",
    "tokenizer",
    "unet_lora",
)


def condition_embedding_class():
    """``ConditionEmbedding`` (defined lazily: it subclasses torch/diffusers classes)."""
    global _CONDITION_EMBEDDING
    if _CONDITION_EMBEDDING is None:
        _CONDITION_EMBEDDING = _define_condition_embedding()
    return _CONDITION_EMBEDDING


_CONDITION_EMBEDDING = None


def _define_condition_embedding():
    import torch
    from diffusers import ConfigMixin, ModelMixin
    from diffusers.configuration_utils import register_to_config

    class ConditionEmbedding(ModelMixin, ConfigMixin):
        """Learned token embeddings standing in for a text encoder.

        Args:
            tokens: the vocabulary; ``tokens[0]`` must be ``"<pad>"``.
            dim: embedding size (the UNet's ``cross_attention_dim``).
            max_length: longest token sequence (positions are learned).
        """

        @register_to_config
        def __init__(self, tokens: list[str], dim: int = 64, max_length: int = 32):
            super().__init__()
            if not tokens or tokens[0] != PAD or len(set(tokens)) != len(tokens):
                raise ValueError(f"tokens must be unique and start with {PAD!r}, got {tokens[:5]}...")
            self.index = {t: i for i, t in enumerate(tokens)}
            self.embed = torch.nn.Embedding(len(tokens), dim)
            self.position = torch.nn.Parameter(torch.zeros(max_length, dim))
            torch.nn.init.normal_(self.embed.weight, std=1.0)

        def ids(self, prompts: list[list[str]]):
            """``(b, L)`` long token ids of token-name sequences, padded with ``<pad>``."""
            length = max(len(p) for p in prompts)
            if length > self.config.max_length:
                raise InputError(
                    f"prompt of {length} tokens; this model takes at most {self.config.max_length}"
                )
            unknown = sorted({t for p in prompts for t in p if t not in self.index})
            if unknown:
                raise InputError(
                    f"unknown condition token(s) {unknown}; this model knows {list(self.index)[1:]}"
                )
            rows = [[self.index[t] for t in p] + [0] * (length - len(p)) for p in prompts]
            return torch.tensor(rows, dtype=torch.long, device=self.position.device)

        def forward(self, ids):
            """``(b, L)`` ids -> ``(b, L, dim)`` encoder hidden states."""
            return self.embed(ids) + self.position[: ids.shape[1]]

    return ConditionEmbedding


@dataclass(frozen=True)
class LabelModelSpec:
    """A checked model folder (no weights loaded).

    Attributes:
        path: the folder. card: its model card (empty for a plain SD folder).
        components: component name -> folder it is loaded from (here or a base).
        name, kind, domain: from the card. resolution: output side in px. channels: 1 or 3.
        hu_range: CT intensity window, or None for RGB. classes: control classes.
        class_rules: class -> fnmatch patterns of source label names. prompt: prompt rule.
        latent: latent settings or None. sha256: component -> weight-file hash.
    """

    path: Path
    card: dict
    components: dict[str, Path]
    name: str
    kind: str
    domain: str
    resolution: int
    channels: int
    hu_range: tuple[float, float] | None
    classes: tuple[str, ...]
    class_rules: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prompt: dict = field(default_factory=dict)
    latent: dict | None = None
    sha256: dict[str, str] = field(default_factory=dict)

    @property
    def has_controlnet(self) -> bool:
        return "controlnet" in self.components

    def as_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "kind": self.kind, "sha256": dict(self.sha256)}


def weights_sha256(folder: Path) -> str:
    """sha256 of a component's weight file (cached on path, mtime and size)."""
    from core.pipelines.loading import _file_sha256

    for name in (
        *WEIGHTS,
        "model.safetensors",
        "adapter_model.safetensors",
        "pytorch_lora_weights.safetensors",
    ):
        f = folder / name
        if f.is_file():
            st = f.stat()
            return _file_sha256(f.resolve(), st.st_mtime_ns, st.st_size)
    raise InputError(f"{folder}: no weight file ({WEIGHTS[0]}, model.safetensors, adapter or LoRA weights)")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


def _components(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Path], dict]:
    """Component -> folder for ``path`` and its base chain; also returns ``path``'s card."""
    card = _read_json(path / CARD_NAME) if (path / CARD_NAME).is_file() else {}
    found = {c: path for c in COMPONENTS if (path / c).is_dir()}
    base = card.get("base") or {}
    if base.get("path"):
        base_path = Path(base["path"])
        base_path = (path / base_path).resolve() if not base_path.is_absolute() else base_path
        if base_path in seen or base_path == path.resolve():
            raise InputError(f"{path}: its base chain loops back to {base_path}")
        if not base_path.is_dir():
            raise InputError(
                f"{path}: base model {base_path} (card 'base.path') is missing; put the base folder there"
            )
        inherited, _ = _components(base_path, (*seen, path.resolve()))
        for c, where in inherited.items():
            if c != "controlnet":  # a ControlNet belongs to its own folder
                found.setdefault(c, where)
        for c, expected in (base.get("sha256") or {}).items():
            if c in found and found[c] != path and weights_sha256(found[c] / c) != expected:
                raise InputError(
                    f"{path}: the base {c} in {found[c]} is not the one this model was trained on (sha256 differs)"
                )
    return found, card


def read_label_model(path: str | Path) -> LabelModelSpec:
    """Check a model folder (or a plain SD-family folder) and read its settings.

    Raises:
        InputError: missing folder or components; the message names what is missing.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise InputError(
            f"model folder {path} does not exist (or is a file); give a folder written by `synthdx train label-diffusion` or `synthdx train controlnet`, or an SD-style folder"
        )
    comps, card = _components(path)
    missing = [c for c in ("unet", "scheduler") if c not in comps]
    if "condition_embedding" not in comps and not {"text_encoder", "tokenizer"} <= set(comps):
        missing.append("condition_embedding/ (or text_encoder/ + tokenizer/)")
    if missing:
        raise InputError(f"{path} is not a label-conditioned model folder: missing {', '.join(missing)}")
    unet_cfg = _read_json(comps["unet"] / "unet" / "config.json")
    if unet_cfg.get("_class_name") != "UNet2DConditionModel":
        raise InputError(
            f"{path}: unet/ must be a diffusers UNet2DConditionModel, got {unet_cfg.get('_class_name')}"
        )
    latent = card.get("latent")
    if latent is None and "vae" in comps:
        vae_cfg = _read_json(comps["vae"] / "vae" / "config.json")
        latent = {
            "downsample": 2 ** (len(vae_cfg.get("block_out_channels", [0])) - 1),
            "channels": vae_cfg.get("latent_channels", 4),
            "scaling_factor": vae_cfg.get("scaling_factor", 0.18215),
            "shift_factor": vae_cfg.get("shift_factor"),
        }
    size = unet_cfg.get("sample_size") or 64
    size = size if isinstance(size, int) else size[0]
    resolution = int(card.get("resolution", size * (latent["downsample"] if latent else 1)))
    intensity = card.get("intensity", {})
    hu = intensity.get("hu_range")
    channels = int(card.get("channels", 1 if hu else 3))
    classes = tuple(card.get("classes", ()))
    prompt = card.get("prompt") or (
        {"kind": "text", "default": ""} if "text_encoder" in comps else {"kind": "fixed", "tokens": []}
    )
    sha = {
        c: weights_sha256(comps[c] / c)
        for c in ("unet", "controlnet", "vae", "condition_embedding", "unet_lora")
        if c in comps
    }
    return LabelModelSpec(
        path=path.resolve(), card=card, components=comps, name=str(card.get("name", path.name)), kind=str(card.get("kind", "sd" if "text_encoder" in comps else "label-diffusion")),
        domain=str(card.get("domain", "ct" if hu else "rgb")), resolution=resolution, channels=channels,
        hu_range=(float(hu[0]), float(hu[1])) if hu else None, classes=classes,
        class_rules={k: tuple(v) for k, v in card.get("class_rules", {}).items()}, prompt=prompt, latent=latent, sha256=sha,
    )  # fmt: skip


@dataclass
class LabelModel:
    """Loaded components of a ``LabelModelSpec`` (torch modules in eval mode)."""

    spec: LabelModelSpec
    unet: Any
    scheduler_config: dict
    conditioner: Any  # ConditionEmbedding, or (tokenizer, text_encoder)
    vae: Any = None
    controlnet: Any = None

    @property
    def device(self):
        return next(self.unet.parameters()).device

    def encode_prompt(self, prompts: list):
        """``encoder_hidden_states`` ``(b, L, dim)`` for token lists (our embedding) or strings (CLIP)."""
        import torch

        if isinstance(self.conditioner, tuple):
            tokenizer, text_encoder = self.conditioner
            ids = tokenizer(
                [str(p) for p in prompts],
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            return text_encoder(ids.to(text_encoder.device))[0]
        with torch.no_grad():
            return self.conditioner(self.conditioner.ids([list(p) for p in prompts]))


def load_component(spec: LabelModelSpec, name: str, *, device: str = "cpu", dtype=None):
    """One component (``unet``, ``controlnet``, ``vae``, ``condition_embedding``, ``text_encoder``, ``tokenizer``)."""
    import torch

    folder = spec.components[name] / name
    dtype = dtype or torch.float32
    if name == "unet":
        from diffusers import UNet2DConditionModel

        model = UNet2DConditionModel.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
        if "unet_lora" in spec.components:
            model.load_lora_adapter(
                str(spec.components["unet_lora"] / "unet_lora"),
                weight_name="pytorch_lora_weights.safetensors",
                prefix=None,
                adapter_name="default",
            )
            model.fuse_lora()
            model.unload_lora()
    elif name == "controlnet":
        from diffusers import ControlNetModel

        model = ControlNetModel.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
    elif name == "vae":
        from diffusers import AutoencoderKL

        model = AutoencoderKL.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
    elif name == "condition_embedding":
        model = condition_embedding_class().from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
    elif name == "text_encoder":
        from transformers import CLIPTextModel

        model = CLIPTextModel.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
    elif name == "tokenizer":
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    else:
        raise ValueError(f"unknown component {name!r}")
    if str(device) != "cpu":  # (a no-op .to() on CPU makes diffusers warn about float32 modules)
        model = model.to(device)
    return model.eval()


def load_label_model(
    spec: LabelModelSpec | str | Path, *, device: str = "cpu", with_controlnet: bool = True
) -> LabelModel:
    """Load every component of a model folder for inference."""
    spec = spec if isinstance(spec, LabelModelSpec) else read_label_model(spec)
    if "condition_embedding" in spec.components:
        conditioner = load_component(spec, "condition_embedding", device=device)
    else:
        conditioner = (load_component(spec, "tokenizer"), load_component(spec, "text_encoder", device=device))
    return LabelModel(
        spec=spec,
        unet=load_component(spec, "unet", device=device),
        scheduler_config=_read_json(spec.components["scheduler"] / "scheduler" / "scheduler_config.json"),
        conditioner=conditioner,
        vae=load_component(spec, "vae", device=device) if "vae" in spec.components else None,
        controlnet=load_component(spec, "controlnet", device=device)
        if with_controlnet and spec.has_controlnet
        else None,
    )


def prompt_for(
    spec: LabelModelSpec, present: set[str] | None = None, text: str | None = None
) -> list[str] | str:
    """The prompt the card's rule gives for a label map whose classes ``present`` occur.

    ``class-presence``: prefix tokens, then ``<class>:present`` / ``<class>:absent`` per
    class (classes listed in ``always`` are skipped); ``fixed``: the card's tokens;
    ``text``: ``text`` or the card's default string.
    """
    rule = spec.prompt
    kind = rule.get("kind", "fixed")
    if kind == "class-presence":
        present = present or set()
        always = set(rule.get("always", ()))
        return list(rule.get("prefix", ())) + [
            f"{c}:{'present' if c in present else 'absent'}" for c in spec.classes if c not in always
        ]
    if kind == "fixed":
        return list(rule.get("tokens", ()))
    if kind == "text":
        return text if text is not None else str(rule.get("default", ""))
    raise InputError(f"{spec.path}: unknown prompt kind {kind!r} in the model card")


def controlnet_embedding_channels(downsample: int) -> tuple[int, ...]:
    """``conditioning_embedding_out_channels`` that bring a pixel label map down by ``downsample`` (a power of 2)."""
    levels = round(math.log2(downsample))
    if 2**levels != downsample:
        raise ValueError(f"latent downsample must be a power of 2, got {downsample}")
    return tuple(min(16 * 2**i, 256) for i in range(levels + 1))
