"""Feature extractors: our trained CT network (from assets) and the FID Inception loader.

The Inception tests use random weights of the same architecture: the real weight files
cannot be downloaded here, so only the architecture and the loading paths are checked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from core.errors import InputError
from core.metrics import CTFeatureExtractor, InceptionExtractor, check_images, get_fid_score, get_kid_score
from core.metrics.baselines import neighbouring_slice_baseline
from core.metrics.extractors import DEFAULT_CT_FEATURES


@pytest.fixture(scope="module")
def ct_extractor() -> CTFeatureExtractor:
    return CTFeatureExtractor()


@pytest.fixture(scope="module")
def held_out_crops(shared_data) -> np.ndarray:
    """300 64x64 body crops on a grid over the cases the feature network never saw in training."""
    from core.io import load_volume

    card = json.loads((DEFAULT_CT_FEATURES / "model_card.json").read_text())
    crops = []
    for name in card["data"]["held_out"]:  # e.g. "ibsi_sts/STS_032"
        vol = load_volume(shared_data / "ct" / name / "CT_image.nii.gz").array
        crops += [
            vol[z, y : y + 64, x : x + 64]
            for z in range(0, vol.shape[0], 2)
            for y in range(0, vol.shape[1] - 64, 32)
            for x in range(0, vol.shape[2] - 64, 32)
        ]
    crops = np.stack([c for c in crops if (c > -500).mean() > 0.5])
    return crops[np.random.default_rng(0).permutation(len(crops))[:300]]


# --- our CT network ---------------------------------------------------------------------------------


def test_ct_extractor_loads_from_assets_with_its_card(ct_extractor) -> None:
    card = ct_extractor.card
    assert ct_extractor.feature_dim == card["feature_dim"] == 128
    assert card["config"]["input_size"] == 64
    assert card["config"]["hu_ranges"] == [[-1000.0, 1000.0], [-160.0, 240.0]]
    assert card["training"]["steps"] > 0 and card["training"]["wall_time_s"] > 0
    assert set(card["data"]["held_out"]).isdisjoint(card["data"]["training_volumes"])
    # Trained, not just initialised: held-out retrieval far above both chance and the untrained net.
    metrics = card["metrics"]
    assert metrics["val_top1_retrieval"] > 10 * metrics["val_top1_chance"]
    assert metrics["val_top1_retrieval"] > metrics["untrained_encoder_same_seed"]["val_top1"] + 0.2


def test_ct_extractor_shape_dtype_and_determinism(ct_extractor) -> None:
    rng = np.random.default_rng(0)
    crops = rng.normal(40, 30, size=(5, 64, 64)).astype(np.float32)
    f1 = ct_extractor.extract(crops)
    assert f1.shape == (5, 128) and f1.dtype == np.float64 and np.isfinite(f1).all()
    np.testing.assert_array_equal(f1, ct_extractor.extract(crops))
    # One crop alone gives the features it gets in a batch (no batch statistics).
    np.testing.assert_allclose(ct_extractor.extract(crops[2:3])[0], f1[2], rtol=1e-5, atol=1e-6)
    # Other sizes are resized to 64x64: a 2x upsampled crop gives nearly the same features.
    big = np.repeat(np.repeat(crops, 2, axis=1), 2, axis=2)
    assert ct_extractor.extract(big).shape == (5, 128)
    assert ct_extractor.extract(rng.normal(0, 30, size=(2, 40, 90)).astype(np.float64)).shape == (2, 128)


def test_ct_extractor_separates_real_crops_from_simple_fakes(ct_extractor, held_out_crops) -> None:
    rng = np.random.default_rng(1)
    a, b = held_out_crops[:150], held_out_crops[150:]
    f_a, f_b = ct_extractor.extract(a), ct_extractor.extract(b)
    fid_real = get_fid_score(f_a, f_b)
    kid_real = get_kid_score(f_a, f_b, num_subsets=50, subset_size=100)
    fakes = {
        "blur 1.5 px": gaussian_filter(b, sigma=(0, 1.5, 1.5)),
        "added noise 30 HU": b + rng.normal(0, 30, b.shape).astype(np.float32),
        "noise, matched mean/sd": rng.normal(b.mean(), b.std(), b.shape).astype(np.float32),
    }
    for name, fake in fakes.items():
        f_fake = ct_extractor.extract(fake)
        # The same real crops, degraded, are further from the other real half than that half is.
        assert get_fid_score(f_a, f_fake) > 1.5 * fid_real, name
        kid = get_kid_score(f_a, f_fake, num_subsets=50, subset_size=100)
        assert kid.mean > kid_real.mean + kid_real.std, name  # by more than the subset spread
    # Pure noise is told apart image by image: nearest centroid, fitted on A, scored on B.
    f_noise = ct_extractor.extract(fakes["noise, matched mean/sd"])
    centroid_real, centroid_noise = f_a.mean(0), f_noise[:75].mean(0)
    test, truth = np.concatenate([f_b, f_noise[75:]]), np.r_[np.ones(len(f_b)), np.zeros(75)]
    guess = np.linalg.norm(test - centroid_real, axis=1) < np.linalg.norm(test - centroid_noise, axis=1)
    assert np.mean(guess == truth) > 0.9


def test_neighbouring_slice_baseline_on_real_ct(ct_extractor, shared_data) -> None:
    from core.io import load_volume

    vol = load_volume(shared_data / "ct" / "totalseg" / "example_ct.nii.gz").array  # (112, 101, 122), 3 mm
    near = neighbouring_slice_baseline([vol], ct_extractor, offset=1, max_pairs=24, kid_subsets=20)
    far = neighbouring_slice_baseline([vol], ct_extractor, offset=40, max_pairs=24, kid_subsets=20)
    assert near.n_real == far.n_real == 24
    assert np.isfinite(near.fid) and near.fid >= 0
    assert near.fid < far.fid and near.kid_mean < far.kid_mean


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((64, 64), np.float32), "pass a batch"),
        (np.zeros((2, 64, 64), np.uint8), r"\(N, H, W\) uint8"),
        (np.zeros((2, 64, 64, 1), np.float32), "must be"),
        (np.zeros((2, 64, 64, 3), np.uint8), "takes \\(N, H, W\\) float HU"),
        (np.zeros((0, 64, 64), np.float32), "empty"),
        (np.zeros((2, 8, 64), np.float32), "at least 16x16"),
        ([[[0.0] * 64] * 64], "numpy array"),
    ],
)
def test_ct_extractor_input_errors(ct_extractor, images, message) -> None:
    with pytest.raises(InputError, match=message):
        ct_extractor.extract(images)


def test_ct_extractor_rejects_nan_and_counts_it(ct_extractor) -> None:
    crops = np.zeros((2, 32, 32), np.float32)
    crops[1, 3, 4] = np.nan
    crops[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="2 NaN or infinite"):
        ct_extractor.extract(crops)


def test_ct_extractor_refuses_a_folder_without_weights_or_with_a_changed_file(tmp_path) -> None:
    with pytest.raises(InputError, match="train_features"):
        CTFeatureExtractor(tmp_path)
    weights = (DEFAULT_CT_FEATURES / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(weights[:-4])
    (tmp_path / "model_card.json").write_text((DEFAULT_CT_FEATURES / "model_card.json").read_text())
    with pytest.raises(InputError, match="checksum"):
        CTFeatureExtractor(tmp_path)


# --- FID Inception ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_inception():
    import torch

    from core.metrics.inception import FIDInceptionV3

    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics so a wrong load would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_inception_architecture_has_torchvisions_parameter_count(random_inception) -> None:
    # torchvision's inception_v3 has 27,161,264 parameters with its auxiliary head (3,326,696)
    # and 1000 classes; the FID network drops the head and has 1008 classes (+16,392).
    assert sum(p.numel() for p in random_inception.parameters()) == 27_161_264 - 3_326_696 + 16_392
    keys = random_inception.state_dict().keys()
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in keys and "fc.weight" in keys
    assert not any(k.startswith("AuxLogits") for k in keys)


def test_inception_extractor_loads_a_state_dict_file(tmp_path, random_inception) -> None:
    import torch

    from core.metrics.inception import preprocess_uint8

    path = tmp_path / "pt_inception-2015-12-05-random.pth"
    torch.save(random_inception.state_dict(), path)
    extractor = InceptionExtractor(path, hu_window=(-160.0, 240.0))
    rng = np.random.default_rng(2)
    hu = rng.uniform(-300, 300, size=(1, 40, 48)).astype(np.float32)  # one image: 299 px forwards are slow
    feats = extractor.extract(hu)
    assert feats.shape == (1, 2048) and feats.dtype == np.float64
    # HU goes through the soft-tissue window to grey RGB; pytorch-fid's preprocessing after that.
    from core.windowing import apply_window

    grey = np.repeat(apply_window(hu, low=-160, high=240)[..., None], 3, axis=-1)
    with torch.no_grad():
        x = preprocess_uint8(torch.from_numpy(grey).permute(0, 3, 1, 2))
        direct = random_inception(x).double().numpy()
    np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(extractor.extract(grey), feats)


def test_inception_extractor_calls_torchscript_with_return_features(tmp_path) -> None:
    import torch

    class Probe(torch.nn.Module):
        """Stands in for NVIDIA's TorchScript: features = per-channel mean of the input, tiled."""

        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            if not return_features:
                return torch.zeros(x.shape[0], 1008)
            return x.mean(dim=(2, 3)).repeat(1, 683)[:, :2048]

    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(Probe()).save(str(path))
    extractor = InceptionExtractor(path)
    rgb = np.zeros((3, 20, 20, 3), np.uint8)
    rgb[1] = 255
    rgb[2, ..., 0] = 100
    feats = extractor.extract(rgb)
    assert extractor.torchscript and feats.shape == (3, 2048)
    np.testing.assert_allclose(feats[:, :3], [[0, 0, 0], [255, 255, 255], [100, 0, 0]])  # values in [0, 255]


def test_inception_extractor_refuses_other_files(tmp_path) -> None:
    import torch

    with pytest.raises(InputError, match="no such Inception weight file"):
        InceptionExtractor(tmp_path / "missing.pth")
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    with pytest.raises(InputError, match="not the FID Inception state dict"):
        InceptionExtractor(wrong)
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(InputError, match="not a readable torch file"):
        InceptionExtractor(text)


def test_check_images_names_the_kind() -> None:
    assert check_images(np.zeros((1, 16, 16), np.float64)) == "hu"
    assert check_images(np.zeros((1, 16, 16, 3), np.uint8)) == "rgb"
