"""Feature extractors for FID/KID: images in, ``(N, D)`` float64 features out.

Every extractor has ``extract(images) -> (N, D)`` and accepts one or both of

* ``(N, H, W)`` float CT in Hounsfield units, or
* ``(N, H, W, 3)`` uint8 RGB (H&E tiles, or CT already windowed for display).

Two are provided; torch is imported only when one is built:

``CTFeatureExtractor``
    The network we train ourselves (``core/training/train_features.py``), weights and
    model card in ``assets/models/ct-features``. HU only. Fixed preprocessing: two
    channels, HU clipped to [-1000, 1000] and [-160, 240] and scaled to [-1, 1]; crops
    resized to 64x64 (bilinear, antialiased; non-square crops are stretched). 128 features.
``InceptionExtractor``
    The standard FID Inception-v3, from a weight file the user supplies (none ships;
    nothing is downloaded). Works with exactly these files:

    * ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid) or
      ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity): a state dict,
      loaded into ``core.metrics.inception.FIDInceptionV3``; preprocessing is
      pytorch-fid's (uint8 / 255, bilinear resize to 299, scale to [-1, 1]), so the
      features match pytorch-fid's;
    * ``inception-2015-12-05.pt`` (NVIDIA's TorchScript from the StyleGAN2-ADA metrics,
      used by clean-fid): called as ``model(x, return_features=True)`` with ``x`` float
      ``(N, 3, H, W)`` in [0, 255]; it resizes to 299 inside. Its resize differs from
      pytorch-fid's, so the two give slightly different FIDs: never mix them.

    HU input is first windowed to uint8 grey (``hu_window``, default soft tissue
    [-160, 240] HU) and repeated to three channels. Verified here only with random
    weights of the same architecture: the real files cannot be obtained offline.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from core.errors import InputError

ImageKind = Literal["hu", "rgb"]
DEFAULT_CT_FEATURES = Path(__file__).resolve().parents[2] / "assets" / "models" / "ct-features"
MIN_SIZE = 16  # pixels; smaller crops carry too little texture to compare
INCEPTION_FILES = (
    "pt_inception-2015-12-05-6726825d.pth (pytorch-fid), weights-inception-2015-12-05-6726825d.pth "
    "(torch-fidelity) or the TorchScript inception-2015-12-05.pt (StyleGAN2-ADA metrics / clean-fid)"
)


class FeatureExtractor(Protocol):
    """What ``FIDMetric``/``KIDMetric`` and the baselines need from an extractor."""

    name: str
    feature_dim: int

    def extract(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` HU float or ``(N, H, W, 3)`` uint8 -> ``(N, feature_dim)`` float64."""
        ...


def check_images(images: np.ndarray, *, accept: tuple[ImageKind, ...] = ("hu", "rgb")) -> ImageKind:
    """Validate a batch of images and say which kind it is.

    Args:
        images: ``(N, H, W)`` float HU or ``(N, H, W, 3)`` uint8 RGB; N >= 1, H, W >= 16.
        accept: the kinds the caller can use.

    Raises:
        InputError: wrong type, shape, dtype, size, or NaN/inf values.
    """
    if not isinstance(images, np.ndarray):
        raise InputError(f"images must be a numpy array, got {type(images).__name__}")
    if images.ndim == 3 and np.issubdtype(images.dtype, np.floating):
        kind: ImageKind = "hu"
    elif images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8:
        kind = "rgb"
    elif images.ndim == 2:
        raise InputError(f"got one 2D image {images.shape}; pass a batch (N, H, W), e.g. image[None]")
    elif images.ndim == 3 and images.dtype == np.uint8:
        raise InputError("got (N, H, W) uint8: pass CT as float HU, or grey images as (N, H, W, 3) uint8")
    else:
        raise InputError(
            f"images must be (N, H, W) float HU or (N, H, W, 3) uint8 RGB, got shape {images.shape} "
            f"dtype {images.dtype}"
        )
    if kind not in accept:
        need = " or ".join({"hu": "(N, H, W) float HU", "rgb": "(N, H, W, 3) uint8 RGB"}[k] for k in accept)
        raise InputError(f"this extractor takes {need}, got {kind.upper()} images of shape {images.shape}")
    n, h, w = images.shape[:3]
    if n == 0:
        raise InputError("images is an empty batch (N = 0)")
    if min(h, w) < MIN_SIZE:
        raise InputError(f"images are {h}x{w} pixels; crops must be at least {MIN_SIZE}x{MIN_SIZE}")
    if kind == "hu" and not np.isfinite(images).all():
        bad = int(np.count_nonzero(~np.isfinite(images)))
        raise InputError(f"images contain {bad} NaN or infinite values; fill or mask them before extraction")
    return kind


class CTFeatureExtractor:
    """Our trained CT feature network (``assets/models/ct-features``).

    Args:
        model_dir: folder with ``model.safetensors`` and ``model_card.json``.
        batch_size: crops per forward pass (memory only; results do not depend on it).
    """

    name = "ct-features"

    def __init__(self, model_dir: str | Path | None = None, *, batch_size: int = 256) -> None:
        from safetensors.torch import load_file

        from core.metrics.ct_encoder import CTEncoder, CTEncoderConfig

        folder = Path(model_dir) if model_dir is not None else DEFAULT_CT_FEATURES
        weights, card_path = folder / "model.safetensors", folder / "model_card.json"
        if not weights.is_file() or not card_path.is_file():
            raise InputError(
                f"{folder}: needs model.safetensors and model_card.json; train them with "
                "`python -m core.training.train_features --out <folder>`"
            )
        self.card = json.loads(card_path.read_text())
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != self.card.get("sha256"):
            raise InputError(
                f"{weights}: checksum differs from its model card (a Git LFS pointer or a stale file?)"
            )
        self.config = CTEncoderConfig.from_json(self.card["config"])
        self.model = CTEncoder(self.config)
        self.model.load_state_dict(load_file(str(weights)))
        self.model.eval()
        self.feature_dim = self.config.feature_dim
        self.batch_size = batch_size

    def extract(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` float HU crops -> ``(N, 128)`` float64 features (deterministic)."""
        import torch

        from core.metrics.ct_encoder import preprocess_hu

        check_images(images, accept=("hu",))
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                x = preprocess_hu(images[i : i + self.batch_size], self.config)  # (B, 2, 64, 64)
                out.append(self.model(x).double().numpy())
        return np.concatenate(out)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())


class InceptionExtractor:
    """Standard FID Inception-v3 features (2048) from a user-supplied weight file.

    Args:
        weights: path of one of the files listed in this module's docstring.
        hu_window: ``(low, high)`` HU mapped to black/white when given CT in HU.
        batch_size: images per forward pass.
    """

    name = "inception-2015-12-05"
    feature_dim = 2048

    def __init__(
        self, weights: str | Path, *, hu_window: tuple[float, float] = (-160.0, 240.0), batch_size: int = 32
    ) -> None:
        import torch

        from core.metrics.inception import FIDInceptionV3

        path = Path(weights)
        if not path.is_file():
            raise InputError(f"{path}: no such Inception weight file; use {INCEPTION_FILES}")
        if not hu_window[1] > hu_window[0]:
            raise InputError(f"hu_window high must exceed low, got {hu_window}")
        self.hu_window, self.batch_size = hu_window, batch_size
        self.torchscript = _is_torchscript(path)
        if self.torchscript:
            self.model = torch.jit.load(str(path), map_location="cpu").eval()
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip and torch errors alike mean "not a weight file"
            msg = f"{path.name}: not a readable torch file ({exc}); use {INCEPTION_FILES}"
            raise InputError(msg) from exc
        if not isinstance(state, dict):
            raise InputError(
                f"{path.name}: holds a {type(state).__name__}, not a state dict; use {INCEPTION_FILES}"
            )
        self.model = FIDInceptionV3()
        missing, unexpected = _key_mismatch(self.model.state_dict(), state)
        if missing or unexpected:
            raise InputError(
                f"{path.name}: not the FID Inception state dict "
                f"({len(missing)} missing keys, e.g. {missing[:3]}; "
                f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}); use {INCEPTION_FILES}"
            )
        self.model.load_state_dict(state)
        self.model.eval()

    def _to_rgb(self, images: np.ndarray) -> np.ndarray:
        from core.windowing import apply_window

        if check_images(images) == "rgb":
            return images
        grey = apply_window(images, low=self.hu_window[0], high=self.hu_window[1])  # (N, H, W) uint8
        return np.repeat(grey[..., None], 3, axis=-1)

    def extract(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` HU or ``(N, H, W, 3)`` uint8 -> ``(N, 2048)`` float64 pool3 features."""
        import torch

        from core.metrics.inception import preprocess_uint8

        rgb = self._to_rgb(images)
        out = []
        with torch.inference_mode():
            for i in range(0, len(rgb), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(rgb[i : i + self.batch_size])).permute(0, 3, 1, 2)
                if self.torchscript:
                    feats = self.model(x.float(), return_features=True)  # resizes to 299 inside
                else:
                    feats = self.model(preprocess_uint8(x))
                out.append(feats.reshape(len(x), -1).double().numpy())
        features = np.concatenate(out)
        if features.shape[1] != self.feature_dim:
            raise InputError(f"the Inception model returned {features.shape[1]} features, expected 2048")
        return features


def _key_mismatch(expected: dict, given: dict) -> tuple[list[str], list[str]]:
    # BatchNorm's num_batches_tracked is absent from weights converted before torch 0.4.1.
    exp = {k for k in expected if not k.endswith("num_batches_tracked")}
    got = {k for k in given if not k.endswith("num_batches_tracked")}
    wrong_shape = [k for k in exp & got if tuple(expected[k].shape) != tuple(given[k].shape)]
    return sorted(exp - got) + wrong_shape, sorted(got - exp)
