"""Label-conditioned generation: conditions, model folders, training both models, and a ControlNet that obeys."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import InputError
from core.pipelines.label_condition import (
    CT_CLASS_RULES,
    class_lookup,
    class_map,
    classes_from_colours,
    load_condition,
    one_hot,
    render_classes,
)
from core.training.label_config import (
    ControlNetConfig,
    LabelDataConfig,
    LabelDiffusionConfig,
    LabelUNetConfig,
)
from tests.core.test_train_inpaint import make_case

CT = tuple(CT_CLASS_RULES)
TINY_UNET = LabelUNetConfig(
    resolution=16,
    block_out_channels=(16, 32),
    cross_attention_levels=(False, True),
    norm_num_groups=8,
    cross_attention_dim=16,
)


def tiny_base_config(out: Path, data: LabelDataConfig, **kw) -> LabelDiffusionConfig:
    base = LabelDiffusionConfig(
        out_dir=str(out),
        model=TINY_UNET,
        data=data,
        steps=4,
        batch_size=2,
        warmup_steps=1,
        sample_every=2,
        checkpoint_every=2,
        sample_steps=2,
        num_threads=1,
    )
    return replace(base, **kw)


def tiny_ct_models(root: Path) -> tuple[Path, Path]:
    """A 2-step tiny CT base and a 1-step ControlNet on it (for CLI and app tests); returns (base, controlnet)."""
    from core.training.data import discover_sources
    from core.training.train_controlnet import train as train_cn
    from core.training.train_label_diffusion import train as train_base

    make_case(root / "data" / "case_a", seed=0)
    data = LabelDataConfig(sources=tuple(discover_sources(root / "data")), pixel_mm=4.0)
    base = train_base(tiny_base_config(root / "base", data, steps=2, sample_every=2), progress=False)
    cfg = ControlNetConfig(out_dir=str(root / "cn"), base=str(base), data=data, steps=1, batch_size=2, warmup_steps=0,
                           sample_every=1, checkpoint_every=1, sample_steps=2, num_threads=1)  # fmt: skip
    return base, train_cn(cfg, progress=False)


@pytest.fixture(scope="module")
def ct_data(tmp_path_factory) -> LabelDataConfig:
    from core.training.data import discover_sources

    root = tmp_path_factory.mktemp("ct")
    make_case(root / "case_a", seed=0)
    make_case(root / "case_b", seed=1)
    return LabelDataConfig(sources=tuple(discover_sources(root)), holdout=("case_b",), pixel_mm=4.0)


@pytest.fixture(scope="module")
def trained(ct_data, tmp_path_factory) -> dict:
    """A 4-step base (with a step-1 snapshot) and a 3-step ControlNet on it."""
    from core.training.train_controlnet import train as train_cn
    from core.training.train_label_diffusion import train as train_base

    root = tmp_path_factory.mktemp("runs")
    base = train_base(tiny_base_config(root / "base", ct_data, snapshot_steps=(1,)), progress=False)
    cn_cfg = ControlNetConfig(
        out_dir=str(root / "cn"),
        base=str(base),
        regime="domain base",
        data=ct_data,
        steps=3,
        batch_size=2,
        warmup_steps=1,
        sample_every=3,
        checkpoint_every=1,
        sample_steps=2,
        num_threads=1,
    )
    return {"root": root, "base": base, "cn": train_cn(cn_cfg, progress=False), "cn_cfg": cn_cfg}


# ----------------------------------------------------------------------------- conditions
def test_label_names_map_to_classes_by_pattern() -> None:
    names = {
        1: "liver",
        2: "vertebrae_L1",
        3: "rib_left_3",
        5: "kidney_cyst_left",
        7: "CT_mask",
        9: "thyroid_gland",
        11: "subcutaneous_fat",
    }
    lut = class_lookup(names, CT, CT_CLASS_RULES)
    got = {n: CT[lut[i] - 1] for i, n in names.items()}
    assert got == {
        "liver": "liver",
        "vertebrae_L1": "bone",
        "rib_left_3": "bone",
        "kidney_cyst_left": "kidney",
        "CT_mask": "lesion",
        "thyroid_gland": "body",
        "subcutaneous_fat": "body",
    }
    assert class_lookup({4: "spleen"}, ("liver",), CT_CLASS_RULES)[4] == 0  # no class, no default: free


def test_unlabelled_pixels_become_air_or_body_from_hu() -> None:
    hu = np.full((32, 32), -1000.0)
    hu[4:28, 4:28] = 30.0
    labels = np.zeros((32, 32), int)
    labels[10:16, 10:16] = 7
    cm = class_map(labels, {7: "liver"}, CT, CT_CLASS_RULES, hu=hu)
    assert (
        cm[0, 0] == CT.index("air") + 1
        and cm[5, 5] == CT.index("body") + 1
        and cm[12, 12] == CT.index("liver") + 1
    )
    assert (class_map(labels, {7: "liver"}, CT, CT_CLASS_RULES)[0, 0]) == 0  # no HU: free


def test_one_hot_colours_and_files_round_trip(tmp_path: Path) -> None:
    cm = np.zeros((16, 16), np.uint8)
    cm[2:6, 2:6], cm[8:12, 8:12] = CT.index("liver") + 1, CT.index("lesion") + 1
    oh = one_hot(cm, len(CT))
    assert oh.shape == (len(CT), 16, 16) and oh[:, 0, 0].sum() == 0 and oh[CT.index("liver"), 3, 3] == 1
    rgb = render_classes(cm, CT)
    np.testing.assert_array_equal(classes_from_colours(rgb, CT), cm)
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(InputError, match="no class"):
        classes_from_colours(rgb, CT)
    Image.fromarray(render_classes(cm, CT)).save(tmp_path / "c.png")
    Image.fromarray(cm).save(tmp_path / "g.png")
    np.save(tmp_path / "c.npy", cm)
    for name in ("c.png", "g.png", "c.npy"):
        got, _ = load_condition(
            tmp_path / name, class_names=CT, rules=CT_CLASS_RULES, resolution=16, pixel_mm=None
        )
        np.testing.assert_array_equal(got, cm)
    got, _info = load_condition(
        tmp_path / "c.npy", class_names=CT, rules=CT_CLASS_RULES, resolution=32, pixel_mm=None
    )
    assert got.shape == (32, 32) and got[5, 5] == cm[2, 2]
    np.save(tmp_path / "bad.npy", np.full((16, 16), 99))
    with pytest.raises(InputError, match="class ids must be 0..13"):
        load_condition(
            tmp_path / "bad.npy", class_names=CT, rules=CT_CLASS_RULES, resolution=16, pixel_mm=None
        )
    with pytest.raises(InputError, match="does not exist"):
        load_condition(
            tmp_path / "none.png", class_names=CT, rules=CT_CLASS_RULES, resolution=16, pixel_mm=None
        )


def test_nifti_label_maps_are_resampled_named_and_centred(ct_data) -> None:
    seg = (
        Path(ct_data.sources[0].image) / "segmentation.nii.gz"
    )  # KiTS-style: 1 kidney, 2 tumor; 1 mm pixels, 64 x 64
    with pytest.raises(InputError, match="give --slice"):
        load_condition(seg, class_names=CT, rules=CT_CLASS_RULES, resolution=16, pixel_mm=4.0)
    got, info = load_condition(
        seg, class_names=CT, rules=CT_CLASS_RULES, resolution=16, pixel_mm=4.0, slice_index=3
    )
    assert got.shape == (16, 16) and info["mapping"].startswith(
        "values are"
    )  # no labels.json: values are class ids
    assert {int(v) for v in np.unique(got)} == {0, 1, 2}


# ----------------------------------------------------------------------------- data
def test_examples_are_deterministic_and_ablated(ct_data) -> None:
    from core.training.label_data import load_examples

    ex = load_examples(replace(ct_data, free_body_p=1.0), resolution=16, seed=0)
    a, b = ex[5], ex[5]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (
        a["image"].shape == (1, 16, 16)
        and a["control"].shape == (len(CT), 16, 16)
        and a["valid"].shape == (1, 16, 16)
    )
    body, air = CT.index("body"), CT.index("air")
    assert (
        a["control"][[body, air]].sum() == 0 and a["present"][body] == 1
    )  # ablated in the control, present in the image
    held = load_examples(ct_data, resolution=16, seed=0, holdout=True)
    assert {s.source for s in held.slices} == {"case_b"} and {s.source for s in ex.slices} == {"case_a"}


# ----------------------------------------------------------------------------- models
def test_controlnet_forward_on_a_tiny_base_has_one_residual_per_skip() -> None:
    import torch
    from diffusers import ControlNetModel

    from core.training.train_label_diffusion import build_unet

    unet = build_unet(TINY_UNET)
    cn = ControlNetModel.from_unet(
        unet, conditioning_channels=len(CT), conditioning_embedding_out_channels=(16,)
    )
    x, t, states, cond = (
        torch.randn(2, 1, 16, 16),
        torch.tensor([3, 700]),
        torch.randn(2, 5, 16),
        torch.rand(2, len(CT), 16, 16),
    )
    with torch.no_grad():
        down, mid = cn(x, t, states, cond, return_dict=False)
        plain = unet(x, t, states).sample
        with_cn = unet(
            x, t, states, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
    assert len(down) == 1 + 2 * TINY_UNET.layers_per_block + 1 and mid.shape[1] == 32
    assert all(
        float(r.abs().max()) == 0 for r in (*down, mid)
    )  # zero convolutions: the base is unchanged at first
    assert torch.equal(plain, with_cn)


def test_training_both_models_writes_folders_the_pipeline_reads(trained) -> None:
    from core.pipelines.controlnet import ControlNetPipeline
    from core.pipelines.label_models import read_label_model

    base, cn, root = trained["base"], trained["cn"], trained["root"]
    assert sorted(p.name for p in base.iterdir()) == [
        "condition_embedding",
        "model_card.json",
        "scheduler",
        "unet",
    ]
    assert (root / "base" / "model_step_000001" / "unet").is_dir() and (
        root / "base" / "samples" / "step_000004.png"
    ).is_file()
    assert sorted(p.name for p in cn.iterdir()) == [
        "controlnet",
        "model_card.json",
    ]  # the base is referenced, not copied
    card = json.loads((cn / "model_card.json").read_text())
    assert (
        card["kind"] == "controlnet"
        and card["control"]["regime"] == "domain base"
        and card["classes"] == list(CT)
    )
    assert card["training"]["steps"] == 3 and card["licences"] and "val_loss" in card["metrics"]
    spec = read_label_model(cn)
    assert spec.has_controlnet and spec.components["unet"] == base.resolve() and spec.resolution == 16
    out = ControlNetPipeline.from_pretrained(cn)(
        np.full((16, 16), CT.index("liver") + 1, np.uint8), num_inference_steps=2, seed=[3, 4]
    )
    assert out.images.shape == (2, 16, 16) and out.images.dtype == np.float32
    assert -1000 <= out.images.min() and out.images.max() <= 1000
    assert (
        out.provenance["seeds"] == [3, 4]
        and out.provenance["model"]["sha256"]["controlnet"]
        and "liver:present" in out.provenance["prompt"]
    )
    again = ControlNetPipeline.from_pretrained(cn)(out.condition, num_inference_steps=2, seed=[3, 4])
    np.testing.assert_array_equal(again.images, out.images)  # seeded


def test_controlnet_resume_is_exact_and_a_changed_base_is_refused(trained, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from core.pipelines.label_models import read_label_model
    from core.training.train_controlnet import train as train_cn

    cn, cfg = trained["cn"], trained["cn_cfg"]
    weights = load_file(cn / "controlnet" / "diffusion_pytorch_model.safetensors")
    run = Path(cfg.out_dir)
    shutil.copytree(run, tmp_path / "cn")
    cfg2 = replace(cfg, out_dir=str(tmp_path / "cn"))
    shutil.rmtree(tmp_path / "cn" / "checkpoints" / "step_000003")
    shutil.rmtree(tmp_path / "cn" / "model")
    resumed = load_file(train_cn(cfg2, progress=False) / "controlnet" / "diffusion_pytorch_model.safetensors")
    assert all(np.array_equal(weights[k].numpy(), resumed[k].numpy()) for k in weights)
    assert json.loads((tmp_path / "cn" / "model" / "model_card.json").read_text())["training"]["earlier_phases"] == []
    # resumed for one more step at half the rate: the card keeps the config it ran under before
    cfg3 = replace(cfg2, steps=cfg.steps + 1, learning_rate=cfg.learning_rate / 2)
    card = json.loads((train_cn(cfg3, progress=False) / "model_card.json").read_text())["training"]
    assert card["steps"] == cfg.steps + 1 and card["config"]["learning_rate"] == cfg.learning_rate / 2
    assert [(p["until_step"], p["config"]["learning_rate"]) for p in card["earlier_phases"]] == [
        (cfg.steps, cfg.learning_rate)
    ]

    copy = tmp_path / "moved"
    shutil.copytree(trained["base"], copy / "base")
    shutil.copytree(cn, copy / "cn")
    card = json.loads((copy / "cn" / "model_card.json").read_text())
    card["base"]["path"] = "../base"
    (copy / "cn" / "model_card.json").write_text(json.dumps(card))
    assert read_label_model(copy / "cn").components["unet"] == (copy / "base").resolve()
    shutil.copy(
        trained["root"] / "base" / "model_step_000001" / "unet" / "diffusion_pytorch_model.safetensors",
        copy / "base" / "unet" / "diffusion_pytorch_model.safetensors",
    )
    with pytest.raises(InputError, match="not the one this model was trained on"):
        read_label_model(copy / "cn")
    shutil.rmtree(copy / "base")
    with pytest.raises(InputError, match="base model .* is missing"):
        read_label_model(copy / "cn")


def test_pipeline_rejects_bad_requests(trained) -> None:
    from core.pipelines.controlnet import ControlNetPipeline

    pipe = ControlNetPipeline.from_pretrained(trained["cn"])
    ok = np.zeros((16, 16), np.uint8)
    for bad, match in [
        ({"control_image": np.zeros((8, 8), np.uint8)}, r"\(16, 16\) class map"),
        ({"control_image": np.full((16, 16), 40)}, "class ids must be 0..13"),
        ({"control_image": ok, "sampler": "euler"}, "unknown sampler"),
        ({"control_image": ok, "num_inference_steps": 0}, "num_inference_steps"),
        ({"control_image": ok, "conditioning_scale": -1}, "conditioning_scale"),
    ]:
        with pytest.raises(InputError, match=match):
            pipe(**bad)
    with pytest.raises(InputError, match="not a label-conditioned model folder"):
        ControlNetPipeline.from_pretrained(trained["root"] / "base" / "samples")


def write_squares(folder: Path, n: int, seed: int) -> None:
    """A pairs folder of 16 x 16 CT-like squares: +600 HU where the label says "square", -600 HU elsewhere."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "classes.json").write_text(json.dumps({"classes": ["square"], "licence": "CC0"}))
    for i in range(n):
        r, c = rng.integers(1, 9, size=2)
        lab = np.zeros((16, 16), np.uint8)
        lab[r : r + 6, c : c + 6] = 1
        np.save(
            folder / "images" / f"{i:03d}.npy",
            np.where(lab > 0, 600.0, -600.0).astype(np.float32) + rng.normal(0, 20, (16, 16)),
        )
        Image.fromarray(lab).save(folder / "labels" / f"{i:03d}.png")


def test_an_overfit_controlnet_puts_the_square_where_the_condition_says(tmp_path: Path) -> None:
    """Base: squares anywhere. ControlNet: the square where the label map has it. Measured on unseen positions."""
    from core.pipelines.controlnet import ControlNetPipeline
    from core.training.train_controlnet import train as train_cn
    from core.training.train_label_diffusion import train as train_base

    write_squares(tmp_path / "squares", 24, seed=0)
    data = LabelDataConfig(
        pairs=(str(tmp_path / "squares"),),
        classes=("square",),
        class_rules=(("square", ("square",)),),
        drop_class_p=0.0,
    )
    fast = {
        "batch_size": 8,
        "warmup_steps": 10,
        "sample_every": 10_000,
        "checkpoint_every": 10_000,
        "num_threads": 1,
        "learning_rate": 2e-3,
        "ema_decay": 0.0,
    }
    unet = replace(TINY_UNET, prediction_type="v_prediction")
    base = train_base(
        replace(tiny_base_config(tmp_path / "base", data, **fast), model=unet, steps=60, prompt_dropout=0.0),
        progress=False,
    )
    cn = train_cn(
        ControlNetConfig(out_dir=str(tmp_path / "cn"), base=str(base), data=data, steps=80, **fast),
        progress=False,
    )
    pipe = ControlNetPipeline.from_pretrained(cn)
    inside, outside = [], []
    for k, (r, c) in enumerate([(2, 9), (9, 2), (5, 5), (9, 9)]):
        cond = np.zeros((16, 16), np.uint8)
        cond[r : r + 6, c : c + 6] = 1
        img = pipe(cond, num_inference_steps=20, sampler="ddim", seed=k).image
        inside.append(img[cond == 1].mean())
        outside.append(img[cond == 0].mean())
    # the square is bright (+600 HU in training) where asked and the rest dark (-600 HU)
    assert min(inside) > 300 and max(outside) < -300, (inside, outside)


def test_segmenter_run_resumed_with_a_new_rate_keeps_the_old_config_in_its_card(ct_data, tmp_path: Path) -> None:
    from core.segment import SegmenterConfig, train_segmenter

    cfg = SegmenterConfig(out_dir=str(tmp_path / "seg"), data=ct_data, resolution=32, features=(4, 4, 8, 8, 8, 4),
                          steps=2, batch_size=2, warmup_steps=0, sample_every=2, checkpoint_every=1, num_threads=1)  # fmt: skip
    first = json.loads((train_segmenter(cfg, progress=False) / "model_card.json").read_text())["training"]
    assert first["steps"] == 2 and first["earlier_phases"] == []
    card = json.loads(
        (train_segmenter(replace(cfg, steps=3, learning_rate=5e-4), progress=False) / "model_card.json").read_text()
    )["training"]
    assert card["steps"] == 3 and card["config"]["learning_rate"] == 5e-4
    assert [(p["until_step"], p["config"]["learning_rate"]) for p in card["earlier_phases"]] == [(2, 1e-3)]
