"""CTInpaintPipeline on tiny random UNets (2-4 steps), plus the shipped demo model on real CT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.pipelines.ct_inpaint import CTInpaintPipeline


def make_tiny_model(
    path: Path,
    *,
    seed: int = 0,
    conditioning: str = "content",
    prediction_type: str = "epsilon",
    resolution: int = 16,
    hu_range=(-1000.0, 1000.0),
    input_scale: float = 1.0,
) -> Path:
    """A random 3-in/1-out UNet2DModel model folder (~0.2M parameters) with a model card."""
    import torch

    from core.training.config import DataConfig, ModelConfig, TrainConfig
    from core.training.export import build_card, export_model
    from core.training.train_inpaint import build_noise_scheduler, build_unet

    torch.manual_seed(seed)
    mc = ModelConfig(
        resolution=resolution,
        block_out_channels=(16, 32),
        attention_levels=(False, True),
        norm_num_groups=8,
        conditioning=conditioning,
        prediction_type=prediction_type,
        input_scale=input_scale,
    )
    unet = build_unet(mc)
    cfg = TrainConfig(model=mc, data=DataConfig(hu_range=hu_range), model_name=f"tiny-{seed}")
    card = build_card(
        cfg,
        step=0,
        wall_time_s=0.0,
        metrics={},
        n_parameters=sum(p.numel() for p in unet.parameters()),
        data_names=[],
        world_size=1,
    )
    return export_model(unet, build_noise_scheduler(mc), card, path)


def ct_slice(rows: int = 48, cols: int = 56, seed: int = 0) -> np.ndarray:
    """An integer-valued HU slice: air, a soft-tissue body, a bright 'bone' beyond the model's range."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols]
    img = np.where(
        ((yy - rows / 2) / (rows * 0.45)) ** 2 + ((xx - cols / 2) / (cols * 0.45)) ** 2 < 1, 40.0, -1000.0
    )
    img += rng.normal(0, 15, img.shape)
    img[20:24, 26:30] = 1800.0  # outside [-1000, 1000]: must survive where not masked
    return np.rint(img).astype(np.float32)


def square_mask(shape=(48, 56), r=(18, 28), c=(20, 32)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[r[0] : r[1], c[0] : c[1]] = True
    return m


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def pipe(model_dir: Path) -> CTInpaintPipeline:
    return CTInpaintPipeline.from_pretrained(model_dir)


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "sde-dpmsolver++"])
def test_same_seed_same_output_and_outside_the_mask_untouched(pipe: CTInpaintPipeline, sampler: str) -> None:
    img, mask = ct_slice(), square_mask()
    a = pipe(img, mask, num_inference_steps=3, sampler=sampler, seed=5)
    b = pipe(img, mask, num_inference_steps=3, sampler=sampler, seed=5)
    c = pipe(img, mask, num_inference_steps=3, sampler=sampler, seed=6)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert a.images.shape == (1, *img.shape) and a.images.dtype == np.float32
    assert np.array_equal(a.image[~mask], img[~mask])  # bit-identical, bone at 1800 HU included
    assert not np.array_equal(a.image[mask], img[mask])
    low, high = pipe.hu_range
    assert a.samples.shape == (1, 16, 16) and a.samples.min() >= low and a.samples.max() <= high
    inside = a.image[mask]
    assert inside.min() >= min(low, img[mask].min()) and inside.max() <= max(high, img[mask].max())
    prov = a.provenance
    assert prov["sampler"] == sampler and prov["seeds"] == [5] and prov["num_inference_steps"] == 3
    assert prov["models"][0]["sha256"] == pipe.specs[0].sha256 and len(prov["mask_sha256"]) == 64
    assert prov["content"] == "lesion" and prov["unet_evaluations"] == 3
    json.dumps(prov)


def test_samplers_differ_and_content_classes_matter(pipe: CTInpaintPipeline) -> None:
    img, mask = ct_slice(), square_mask()
    ddim = pipe(img, mask, num_inference_steps=3, sampler="ddim", seed=1)
    dpm = pipe(img, mask, num_inference_steps=3, sampler="dpmsolver++", seed=1)
    tissue = pipe(img, mask, num_inference_steps=3, sampler="ddim", seed=1, content="tissue")
    assert not np.array_equal(ddim.image, dpm.image)
    assert not np.array_equal(ddim.image, tissue.image)


def test_repaint_resampling_runs_more_unet_evaluations(pipe: CTInpaintPipeline) -> None:
    img, mask = ct_slice(), square_mask()
    calls = []
    out = pipe(
        img,
        mask,
        num_inference_steps=4,
        sampler="repaint",
        jump_length=2,
        jump_n_sample=2,
        seed=3,
        callback=lambda d, t: calls.append((d, t)),
    )
    assert np.array_equal(out.image[~mask], img[~mask])
    expected = pipe.unet_evaluations(4, "repaint", 2, 2)
    assert expected > 4  # resampling re-runs steps
    assert calls[-1] == (expected, expected) and len(calls) == expected
    assert out.provenance["jump_length"] == 2 and out.provenance["unet_evaluations"] == expected
    again = pipe(img, mask, num_inference_steps=4, sampler="repaint", jump_length=2, jump_n_sample=2, seed=3)
    assert np.array_equal(out.images, again.images)


def test_several_samples_give_a_std_map_zero_outside_the_mask(pipe: CTInpaintPipeline) -> None:
    img, mask = ct_slice(), square_mask()
    out = pipe(img, mask, num_inference_steps=2, sampler="ddim", seed=10, num_samples=3)
    assert out.images.shape == (3, *img.shape) and out.provenance["seeds"] == [10, 11, 12]
    assert np.all(out.std[~mask] == 0) and out.std[mask].max() > 0
    assert np.array_equal(out.mean[~mask], img[~mask])
    np.testing.assert_allclose(out.mean[mask], out.images.mean(0)[mask], rtol=1e-5, atol=1e-3)
    # a sample does not depend on the others in its batch
    single = pipe(img, mask, num_inference_steps=2, sampler="ddim", seed=11)
    np.testing.assert_allclose(
        single.image, out.images[1], atol=0.05
    )  # HU; batched convolutions round differently


def test_ensemble_of_checkpoints(model_dir: Path, tmp_path: Path) -> None:
    other = make_tiny_model(tmp_path / "other", seed=1)
    pipe = CTInpaintPipeline.from_pretrained([model_dir, other])
    out = pipe(ct_slice(), square_mask(), num_inference_steps=2, sampler="ddim", seed=0, num_samples=4)
    assert out.provenance["member_of_sample"] == [0, 1, 0, 1]
    assert [m["path"] for m in out.provenance["models"]] == [str(model_dir.resolve()), str(other.resolve())]
    assert out.provenance["unet_evaluations"] == 4  # 2 steps x 2 members (each batched)


def test_large_slice_samples_only_a_crop(pipe: CTInpaintPipeline) -> None:
    img = np.full((512, 512), 40.0, np.float32)
    small = square_mask((512, 512), (250, 256), (300, 305))
    out = pipe(img, small, num_inference_steps=2, sampler="ddim")
    assert out.crop_box.size == 16  # native resolution: mask extent 6 px <= 16 * 0.5
    large = square_mask((512, 512), (100, 300), (150, 260))
    out = pipe(img, large, num_inference_steps=2, sampler="ddim", blend_px=0)
    assert out.crop_box.size == 400 and out.samples.shape == (1, 16, 16)  # downsampled into the model
    assert np.array_equal(out.image[~large], img[~large])


def test_edge_blend_stays_inside_the_mask(pipe: CTInpaintPipeline) -> None:
    w = CTInpaintPipeline.edge_weight(square_mask(), 2.0)
    assert np.all(w[~square_mask()] == 0) and w[23, 26] == 1.0 and 0 < w[18, 26] < 1
    assert np.array_equal(CTInpaintPipeline.edge_weight(square_mask(), 0), square_mask().astype(np.float32))


def test_bad_requests_raise_input_errors(pipe: CTInpaintPipeline, tmp_path: Path) -> None:
    img, mask = ct_slice(), square_mask()
    with pytest.raises(InputError, match="empty"):
        pipe(img, np.zeros_like(mask))
    with pytest.raises(InputError, match="border"):
        pipe(img, square_mask(r=(0, 5)), min_context_px=4)
    with pytest.raises(InputError, match="slice is 48x56"):
        pipe(img, np.ones((10, 10), bool))
    with pytest.raises(InputError, match="one axial slice"):
        pipe(np.stack([img, img]), mask)
    with pytest.raises(InputError, match="unknown sampler"):
        pipe(img, mask, sampler="euler")
    with pytest.raises(InputError, match="unknown content"):
        pipe(img, mask, content="bone")
    with pytest.raises(InputError, match="does not exist"):
        CTInpaintPipeline.from_pretrained(tmp_path / "missing")
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(InputError, match="missing unet/config.json"):
        CTInpaintPipeline.from_pretrained(tmp_path / "half")
    plain = CTInpaintPipeline.from_pretrained(make_tiny_model(tmp_path / "plain", conditioning="none"))
    assert plain(img, mask, num_inference_steps=2, sampler="ddim").provenance["content"] is None
    with pytest.raises(InputError, match="no content classes"):
        plain(img, mask, content="lesion")
    cfg = json.loads((tmp_path / "plain" / "unet" / "config.json").read_text())
    (tmp_path / "plain" / "unet" / "config.json").write_text(json.dumps({**cfg, "in_channels": 4}))
    with pytest.raises(InputError, match="3 input channels"):
        CTInpaintPipeline.from_pretrained(tmp_path / "plain")


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "sde-dpmsolver++", "repaint"])
def test_v_prediction_models_sample_with_every_sampler(tmp_path: Path, sampler: str) -> None:
    pipe = CTInpaintPipeline.from_pretrained(make_tiny_model(tmp_path / "v", prediction_type="v_prediction"))
    assert pipe.scheduler_config["prediction_type"] == "v_prediction"
    img, mask = ct_slice(), square_mask()
    out = pipe(img, mask, num_inference_steps=3, sampler=sampler, jump_length=1, seed=2)
    assert np.array_equal(out.image[~mask], img[~mask]) and not np.array_equal(out.image[mask], img[mask])
    low, high = pipe.hu_range
    assert np.all((out.samples >= low) & (out.samples <= high)) and np.isfinite(out.samples).all()


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "sde-dpmsolver++", "repaint"])
def test_a_scaled_model_sees_its_input_scale_and_returns_hu_in_range(tmp_path: Path, sampler: str) -> None:
    pipe = CTInpaintPipeline.from_pretrained(make_tiny_model(tmp_path / "k3", input_scale=3.0))
    assert pipe.specs[0].input_scale == 3.0 and pipe.scheduler_config["clip_sample_range"] == 3.0
    img, mask = ct_slice(), square_mask(r=(14, 20), c=(22, 28))  # a native 16 px crop, bone beside the mask
    seen = []
    hook = pipe.unets[0].register_forward_pre_hook(lambda m, args: seen.append(args[0][:, 1].clone()))
    try:
        out = pipe(img, mask, num_inference_steps=3, sampler=sampler, jump_length=1, seed=2)
    finally:
        hook.remove()
    # the masked-image channel is 3 x the crop normalised to [-1, 1], 0 in the mask
    from core.normalization import normalize_hu
    from core.pipelines.crops import extract

    crop = extract(img, out.crop_box)  # native size: the crop is the model's input
    expected = 3.0 * normalize_hu(crop, low=-1000, high=1000) * ~extract(mask, out.crop_box, fill_value=False)
    assert out.crop_box.size == 16 and expected.max() == 3.0  # the 1800 HU bone, clipped at 1000 HU
    np.testing.assert_allclose(seen[0][0].numpy(), expected, atol=1e-5)
    assert np.array_equal(out.image[~mask], img[~mask]) and not np.array_equal(out.image[mask], img[mask])
    assert out.samples.min() >= -1000 and out.samples.max() <= 1000  # clamped at k, then back to HU


def test_a_shipped_copy_stores_float16_and_samples_like_the_original(model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from core.training.export import FLOAT16_NOTE, main

    assert main([str(model_dir), str(tmp_path / "shipped")]) == 0
    shipped = tmp_path / "shipped"
    weights = load_file(str(shipped / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {str(w.dtype) for w in weights.values()} == {"torch.float16"}
    assert json.loads((shipped / "model_card.json").read_text())["storage"] == FLOAT16_NOTE
    img, mask = ct_slice(), square_mask()
    a = CTInpaintPipeline.from_pretrained(model_dir)(img, mask, num_inference_steps=3, sampler="ddim", seed=4)
    b = CTInpaintPipeline.from_pretrained(shipped)(img, mask, num_inference_steps=3, sampler="ddim", seed=4)
    assert np.array_equal(b.image[~mask], img[~mask])
    assert np.abs(a.image - b.image).max() < 5.0  # HU: float16 weights round, they do not change the model


REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "assets" / "models" / "ct-inpaint"


def test_demo_model_card_states_data_licences_and_hold_out() -> None:
    card = json.loads((DEMO_MODEL / "model_card.json").read_text())
    t = card["training"]
    assert {"STS_019", "STS_024", "STS_032"} == set(t["holdout"])
    names = {d["name"] for d in t["data"]}
    assert not names & set(t["holdout"]) and "totalseg_example_ct" in names and len(names) == 13
    assert set(card["licences"]) == {"CC BY 3.0", "CC BY 4.0"} and all(d["attribution"] for d in t["data"])
    assert t["steps"] == t["config"]["steps"] and t["wall_time_s"] > 0 and t["machine"]
    assert card["inputs"]["hu_range"] == [-1000.0, 1000.0] and card["inputs"]["resolution"] == 64
    # held-out quality against the three baselines (bench/inpaint_quality.py --update-card), also in the README
    quality = card["quality"]["ratio_to_neighbouring_slices"]
    # measured without the edge blend: it would mix ground truth into the model's regions only
    assert card["quality"]["sampler"]["blend_px"] == 0.0
    assert set(quality) == {"lesion/context", "lesion/tight", "tissue/context", "tissue/tight"}
    assert all(row[m]["fid_ratio"] > 0 for row in quality.values() for m in ("model", "biharmonic", "mean_fill", "noise"))
    # the permutation tests against each baseline; mean fill and noise are far behind everywhere
    assert all(set(row["model_vs"]) == {"biharmonic", "mean_fill", "noise"} for row in quality.values())
    verdicts = [row["model_vs"][m]["verdict"] for row in quality.values() for m in ("mean_fill", "noise")]
    assert verdicts == ["model lower"] * 8
    assert "| lesion/context |" in (DEMO_MODEL / "README.md").read_text()
    size = sum(p.stat().st_size for p in DEMO_MODEL.rglob("*") if p.is_file())
    assert size < 25 * 1024**2


def test_the_sde_sampler_adds_seeded_noise_to_dpm_solver() -> None:
    pipe = CTInpaintPipeline.from_pretrained(DEMO_MODEL)  # a trained model: random tiny ones saturate
    img, mask = ct_slice(), square_mask()
    ode = pipe(img, mask, num_inference_steps=5, sampler="dpmsolver++", seed=1)
    sde = pipe(img, mask, num_inference_steps=5, sampler="sde-dpmsolver++", seed=1)
    again = pipe(img, mask, num_inference_steps=5, sampler="sde-dpmsolver++", seed=1)
    assert np.array_equal(sde.images, again.images) and np.abs(sde.samples - ode.samples).max() > 5.0
    assert np.array_equal(sde.image[~mask], img[~mask]) and sde.provenance["sampler"] == "sde-dpmsolver++"


def test_demo_model_inpaints_a_held_out_tumour_slice(shared_data: Path) -> None:
    from core.io.load import load_volume

    case = shared_data / "ct" / "ibsi_sts" / "STS_019"  # held out of training
    vol = load_volume(case / "CT_image.nii.gz", labels=case / "CT_mask.nii.gz")
    tumour = vol.labels.array > 0
    k = int(np.argmax(tumour.sum((1, 2))))
    pipe = CTInpaintPipeline.from_pretrained(DEMO_MODEL)
    out = pipe(vol.array[k], tumour[k], num_inference_steps=20, seed=0, num_samples=2)
    assert np.array_equal(out.image[~tumour[k]], vol.array[k][~tumour[k]])
    assert out.samples.min() >= -1000 and out.samples.max() <= 1000
    assert out.std[tumour[k]].mean() > 1.0 and np.all(out.std[~tumour[k]] == 0)
    # a soft-tissue mass, not air, fat or bone (real sarcomas here: median 20-60 HU)
    assert -30 < float(np.median(out.images[:, tumour[k]])) < 150
