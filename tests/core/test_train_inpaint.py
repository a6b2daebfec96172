"""Training data, config and the accelerate training loop (tiny UNet, a few steps, exact resume)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.errors import InputError
from core.training.config import (
    DataConfig,
    DataSource,
    ModelConfig,
    TrainConfig,
    from_dict,
    load_config,
    save_config,
    to_dict,
    validate,
)
from core.training.data import InpaintCrops, StepIndices, discover_sources, load_cases

TINY_MODEL = ModelConfig(
    resolution=16, block_out_channels=(16, 32), attention_levels=(False, True), norm_num_groups=8
)


def make_case(folder: Path, *, seed: int = 0, layout: str = "kits") -> Path:
    """A synthetic CT case (8 x 64 x 64, 1 mm): body, an organ (label 1) and a tumour (label 2) inside it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    z, y, x = np.mgrid[:8, :64, :64]
    body = ((y - 32) / 28.0) ** 2 + ((x - 32) / 26.0) ** 2 < 1
    organ = ((y - 30) / 14.0) ** 2 + ((x - 34) / 12.0) ** 2 < 1
    tumour = (((y - 30) / 5.0) ** 2 + ((x - 36) / 4.0) ** 2 < 1) & (z >= 2) & (z <= 5)
    hu = (
        np.where(body, 20.0, -1000.0)
        + np.where(organ, 80.0, 0.0)
        - np.where(tumour, 60.0, 0.0)
        + rng.normal(0, 10, body.shape)
    )
    labels = np.where(tumour, 2, np.where(organ, 1, 0)).astype(np.uint8)
    to_file = lambda a: np.ascontiguousarray(a.transpose(2, 1, 0))
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])  # LPS voxel axes, like our canonical order
    names = (
        ("imaging.nii.gz", "segmentation.nii.gz")
        if layout == "kits"
        else ("CT_image.nii.gz", "CT_mask.nii.gz")
    )
    nib.save(nib.Nifti1Image(to_file(hu.astype(np.float32)), affine), str(folder / names[0]))
    nib.save(
        nib.Nifti1Image(to_file(labels if layout == "kits" else (labels == 2).astype(np.uint8)), affine),
        str(folder / names[1]),
    )
    return folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_case(root / "case_a", seed=0)
    make_case(root / "case_b", seed=1)
    make_case(root / "sts_like", seed=2, layout="pair")
    return root


def tiny_config(out: Path, sources, **kw) -> TrainConfig:
    data = DataConfig(
        sources=tuple(sources),
        mask_mix=(
            ("lesion", 1.0),
            ("lesion_box", 1.0),
            ("organ", 1.0),
            ("box", 1.0),
            ("transplant", 1.0),
            ("blob", 1.0),
            ("ellipse", 1.0),
            ("brush", 1.0),
        ),
    )
    base = TrainConfig(
        out_dir=str(out),
        model=TINY_MODEL,
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


def test_config_round_trips_through_json_and_rejects_mistakes(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path / "run", [DataSource("a.nii.gz", "b.nii.gz", "a", ("tumor",), "CC BY 4.0", "someone")]
    )
    save_config(cfg, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == cfg
    with pytest.raises(InputError, match=r"unknown key\(s\) \['stepz'\]"):
        from_dict(TrainConfig, {"stepz": 3})
    with pytest.raises(InputError, match="not one of"):
        from_dict(TrainConfig, {"loss_region": "everywhere"})
    with pytest.raises(InputError, match="mask_mix"):
        validate(replace(cfg, data=replace(cfg.data, mask_mix=(("splotch", 1.0),))))
    with pytest.raises(InputError, match="no training data"):
        validate(replace(cfg, data=replace(cfg.data, sources=())))
    with pytest.raises(InputError, match="divisible"):
        validate(replace(cfg, model=replace(TINY_MODEL, resolution=17)))
    assert to_dict(cfg)["data"]["hu_range"] == [-1000.0, 1000.0]


def test_sources_are_found_in_every_layout(data_root: Path, tmp_path: Path) -> None:
    found = discover_sources(data_root, licence="CC0")
    assert sorted(s.name for s in found) == ["case_a", "case_b", "sts_like"]
    pair = next(s for s in found if s.name == "sts_like")
    assert (
        pair.labels.endswith("CT_mask.nii.gz")
        and pair.lesion_labels == ("CT_mask",)
        and pair.licence == "CC0"
    )
    assert discover_sources(data_root / "sts_like" / "CT_image.nii.gz")[0].lesion_labels == ("CT_mask",)
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps(
            {
                "sources": [
                    {
                        "image": "case_a/imaging.nii.gz",
                        "labels": "case_a/segmentation.nii.gz",
                        "licence": "CC BY 4.0",
                    }
                ]
            }
        )
    )
    (src,) = discover_sources(manifest, root=data_root)
    assert Path(src.image).is_file() and src.licence == "CC BY 4.0" and src.name == "imaging"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no CT volumes with masks"):
        discover_sources(tmp_path / "empty")


def test_examples_are_deterministic_and_well_formed(data_root: Path) -> None:
    cases = load_cases(discover_sources(data_root))
    assert {c.source.name: c.lesion_ids for c in cases} == {"case_a": (2,), "case_b": (2,), "sts_like": (1,)}
    cfg = tiny_config(Path("unused"), []).data
    ds = InpaintCrops(cases, cfg, resolution=16, seed=3)
    a, b, c = ds[11], ds[11], ds[12]
    assert all(np.array_equal(a[k], b[k]) for k in ("image", "mask")) and a["kind"] == b["kind"]
    assert not np.array_equal(a["image"], c["image"]) or not np.array_equal(a["mask"], c["mask"])
    items = [ds[i] for i in range(60)]
    for it in items:
        assert it["image"].shape == (1, 16, 16) and it["image"].dtype == np.float32
        assert -1 <= it["image"].min() and it["image"].max() <= 1
        assert set(np.unique(it["mask"])) <= {0.0, 1.0} and it["mask"].any()
        assert it["content"] == int(ds.kinds[it["kind"]] in ("lesion", "lesion_box"))
    assert len({it["kind"] for it in items}) == 8  # every kind in the mix shows up
    # lesion masks cover the tumour; tissue masks stay clear of it
    for kind in ("lesion", "lesion_box", "organ", "box", "transplant", "blob", "ellipse", "brush"):
        rng = np.random.default_rng(0)
        for _ in range(5):
            found = ds._mask(kind, rng)
            if found is None:
                continue
            case, k, mask = found
            if kind.startswith("lesion"):
                assert np.all(mask[case.lesion[k]])
            else:
                assert not (mask & case.lesion[k]).any()


def test_a_mask_kind_the_data_cannot_supply_is_an_error(data_root: Path) -> None:
    cases = load_cases(discover_sources(data_root / "sts_like"))  # a tumour mask only: no organs
    with pytest.raises(InputError, match="'organ' has weight 1.0 but the data hold no organ masks"):
        InpaintCrops(cases, DataConfig(mask_mix=(("organ", 1.0),)), resolution=16, seed=0)


def test_step_indices_split_processes_and_resume_in_place() -> None:
    full = list(StepIndices(start=0, steps=6, batch_size=3))
    resumed = list(StepIndices(start=4, steps=6, batch_size=3))
    assert resumed == full[12:]
    r0, r1 = (list(StepIndices(start=0, steps=6, batch_size=3, rank=r, world=2)) for r in (0, 1))
    assert not set(r0) & set(r1) and len(r0) == len(r1) == 18


def test_masked_loss_ignores_pixels_outside_the_mask() -> None:
    import torch

    from core.training.train_inpaint import build_noise_scheduler, build_unet, diffusion_loss

    torch.manual_seed(0)
    unet, sched = build_unet(TINY_MODEL), build_noise_scheduler(TINY_MODEL)
    image = torch.rand(2, 1, 16, 16) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:10, 4:10] = 1
    noise, t, content = torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.tensor([0, 1])
    with torch.no_grad():
        base = diffusion_loss(
            unet, sched, image, mask, content, noise, t, loss_region="mask", conditioning="content"
        )
        # the same prediction by hand: the masked loss is the squared error averaged over mask pixels only
        pred = unet(
            torch.cat([sched.add_noise(image, noise, t), image * (1 - mask), mask], 1),
            t,
            class_labels=content,
        ).sample
        expected = (((pred - noise) ** 2) * mask).sum() / mask.sum()
        crop = diffusion_loss(
            unet, sched, image, mask, content, noise, t, loss_region="crop", conditioning="content"
        )
    assert float(base) == pytest.approx(float(expected), rel=1e-5)
    assert float(crop) == pytest.approx(float(((pred - noise) ** 2).mean()), rel=1e-5)


def test_input_scale_trains_on_the_scaled_image() -> None:
    import torch

    from core.training.train_inpaint import build_noise_scheduler, build_unet, diffusion_loss

    torch.manual_seed(0)
    unet, sched = build_unet(TINY_MODEL), build_noise_scheduler(TINY_MODEL)
    image = torch.rand(2, 1, 16, 16) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:10, 4:10] = 1
    noise, t, content = torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.tensor([0, 1])
    kw = {"loss_region": "mask", "conditioning": "content"}
    with torch.no_grad():
        scaled = diffusion_loss(unet, sched, image, mask, content, noise, t, input_scale=3.0, **kw)
        by_hand = diffusion_loss(unet, sched, 3 * image, mask, content, noise, t, **kw)
        plain = diffusion_loss(unet, sched, image, mask, content, noise, t, **kw)
    assert float(scaled) == pytest.approx(float(by_hand), rel=1e-6) and float(scaled) != pytest.approx(
        float(plain)
    )


def test_training_writes_a_model_and_a_resumed_run_continues_exactly(data_root: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from core.pipelines.ct_inpaint import CTInpaintPipeline
    from core.training.train_inpaint import train

    sources = [
        replace(s, licence="CC BY 4.0", attribution="synthetic test case")
        for s in discover_sources(data_root)
    ]
    cfg = tiny_config(
        tmp_path / "run", sources, data=replace(tiny_config(tmp_path, sources).data, holdout=("case_b",))
    )
    model = train(cfg, progress=False)
    out = Path(cfg.out_dir)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    assert (out / "samples" / "step_000004.png").is_file() and (out / "config.json").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3, 4] and any("val_loss" in x for x in lines)
    card = json.loads((model / "model_card.json").read_text())
    assert (
        card["training"]["steps"] == 4
        and card["training"]["seed"] == 0
        and card["training"]["holdout"] == ["case_b"]
    )
    assert sorted(d["name"] for d in card["training"]["data"]) == [
        "case_a",
        "sts_like",
    ]  # the held-out case is not listed
    assert (
        card["licences"] == ["CC BY 4.0"]
        and card["inputs"]["hu_range"] == [-1000.0, 1000.0]
        and card["inputs"]["resolution"] == 16
    )
    assert card["code_version"]["git_commit"] and card["training"]["wall_time_s"] > 0
    readme = (model / "README.md").read_text()
    assert "| case_a | CC BY 4.0 | synthetic test case |" in readme and "Held out (never trained on" in readme
    pipe = CTInpaintPipeline.from_pretrained(model)
    assert pipe.resolution == 16 and pipe.content_classes == ("tissue", "lesion")

    weights = load_file(model / "unet" / "diffusion_pytorch_model.safetensors")
    shutil.rmtree(out / "checkpoints" / "step_000004")
    shutil.rmtree(model)
    train(cfg, progress=False)  # resumes at step 2
    resumed = load_file(model / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(np.array_equal(weights[k].numpy(), resumed[k].numpy()) for k in weights)
    other = train(replace(cfg, out_dir=str(tmp_path / "seed1"), seed=1), progress=False)
    reseeded = load_file(other / "unet" / "diffusion_pytorch_model.safetensors")
    assert not all(np.array_equal(weights[k].numpy(), reseeded[k].numpy()) for k in weights)


def test_a_run_can_be_finished_at_a_checkpoint_and_equals_a_shorter_run(
    data_root: Path, tmp_path: Path
) -> None:
    """With a constant learning rate, a run stopped at step 2 and finished there equals a 2-step run."""
    from safetensors.torch import load_file

    from core.training.train_inpaint import train

    sources = discover_sources(data_root)
    long = tiny_config(tmp_path / "long", sources, steps=4, lr_schedule="constant")
    train(long, progress=False)
    shutil.rmtree(tmp_path / "long" / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "long" / "model")
    finished = train(replace(long, steps=2), progress=False)  # resumes at 2, trains nothing, exports
    short = train(replace(long, steps=2, out_dir=str(tmp_path / "short")), progress=False)
    a = load_file(finished / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(short / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert json.loads((finished / "model_card.json").read_text())["training"]["steps"] == 2


def test_a_run_extended_with_a_new_config_keeps_the_old_one_in_its_card(
    data_root: Path, tmp_path: Path
) -> None:
    from core.training.loop import config_history, record_run_config
    from core.training.train_inpaint import train

    sources = discover_sources(data_root)
    first = tiny_config(tmp_path / "run", sources, steps=2, lr_schedule="constant")
    train(first, progress=False)
    record_run_config(to_dict(replace(first, out_dir=str(tmp_path / "moved"))), tmp_path / "run")  # at step 2
    assert config_history(tmp_path / "run") == []  # only the folder differs: the same phase
    record_run_config(to_dict(replace(first, out_dir=str(tmp_path / "run"))), tmp_path / "run")
    # the extension: a lower peak rate decaying over 2 more steps
    model = train(replace(first, steps=4, learning_rate=5e-5, lr_decay_steps=2), progress=False)
    assert config_history(tmp_path / "run") == [{"until_step": 2, "config": to_dict(first)}]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["learning_rate"] == 5e-5
    card = json.loads((model / "model_card.json").read_text())
    assert card["training"]["steps"] == 4 and card["training"]["earlier_phases"][0]["until_step"] == 2
    assert card["training"]["earlier_phases"][0]["config"]["learning_rate"] == first.learning_rate
    assert "training.earlier_phases" in card["reproduce"]
    readme = (model / "README.md").read_text()
    assert f"an earlier phase ran to step 2 (learning rate {first.learning_rate:g}, constant)" in readme


def test_card_quality_table_states_the_permutation_test_verdicts() -> None:
    from core.training.export import _quality_markdown

    won = {
        "verdict": "model lower",
        "fid_ratio_diff": -3.9,
        "p_model_lower": 0.002,
        "null_95": [-0.4, 0.4],
    }
    tie = {
        "verdict": "not separable",
        "fid_ratio_diff": 0.04,
        "p_model_lower": 0.61,
        "null_95": [-0.2, 0.2],
    }
    ratio = {"fid_ratio": 1.3, "kid_ratio": None}
    row = dict.fromkeys(("model", "biharmonic", "mean_fill", "noise"), ratio)
    q = {
        "note": "n.",
        "held_out_cases": ["STS_019"],
        "sampler": {"name": "dpmsolver++", "steps": 25},
        "features": "ct-features",
        "benchmark": "bench/inpaint_quality.py",
        "ratio_to_neighbouring_slices": {
            "lesion/context": {
                **row,
                "n": 58,
                "model_vs": {"biharmonic": won, "mean_fill": won, "noise": won},
            },
            "tissue/context": {
                **row,
                "n": 72,
                "model_vs": {"biharmonic": tie, "mean_fill": won, "noise": won},
            },
            "tissue/tight": {**row, "n": 72},  # measured before the test existed
        },
    }
    lines = "\n".join(_quality_markdown(q))
    assert "| lesion/context | 58 | 1.30 | 1.30 | 1.30 | 1.30 | lower than all 3 |" in lines
    assert (
        "| tissue/context | 72 | 1.30 | 1.30 | 1.30 | 1.30 | biharmonic: not separable, +0.04 (p = 0.61) |"
        in lines
    )
    assert "| tissue/tight | 72 | 1.30 | 1.30 | 1.30 | 1.30 | - |" in lines
    # a card measured before blend_px was recorded says its model regions were edge-blended (2 px)
    assert "25 steps, edge blended over 2 px into the original pixels;" in lines
    q["sampler"]["blend_px"] = 0.0
    assert "25 steps, no edge blending (every method fills the mask" in "\n".join(_quality_markdown(q))


def test_card_phase_lines_name_the_settings_the_next_phase_changed() -> None:
    from core.training.export import _phase_lines

    first = {"out_dir": "a", "steps": 10, "learning_rate": 3e-4, "lr_schedule": "constant", "lr_decay_steps": 0,
             "data": {"mask_mix": [["organ", 0.15]], "fill_range": [0.35, 0.6]}}  # fmt: skip
    second = {**first, "out_dir": "b", "steps": 20, "learning_rate": 1e-4, "lr_decay_steps": 5}  # rate only
    final = {**second, "steps": 30, "data": {**first["data"], "mask_mix": [["organ", 0.0]]}}
    lines = _phase_lines([{"until_step": 10, "config": first}, {"until_step": 20, "config": second}], final)
    assert lines == [
        "- an earlier phase ran to step 10 (learning rate 0.0003, constant); then resumed with training.config",
        "- an earlier phase ran to step 20 (learning rate 0.0001, constant, last 5 decaying); "
        "the next phase changed data.mask_mix; then resumed with training.config",
    ]
