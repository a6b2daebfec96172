"""Compare ControlNets trained on a barely trained base vs on the domain-trained CT base.

For the same label maps (held-out and training slices of the base run's data, centred on
the model canvas, no ablation) each model generates one image per map (seed = map index,
DPM-Solver++, conditioning scale 1). Measured:

* realism: FID and KID between the generated and the real canvases of the same slices,
  with our CT feature network (``core.metrics.CTFeatureExtractor``); references: the
  neighbouring-slice baseline on the real canvases and real training vs real held-out;
* mask faithfulness: Dice between each condition and a segmentation of the generated image
  by the faithfulness segmenter (``core.segment``), beside the segmenter's Dice on the real
  images (its ceiling);
* HU plausibility: per-class median HU of generated vs real (mean absolute difference).

The domain base alone (conditioning scale 0) is reported as a third row. Writes
``<out>/controlnet_report.json`` and ``<out>/regimes_grid.png`` (condition | barely |
domain | real); ``--ship DIR`` also copies the domain-base ControlNet, its base and the
segmenter into ``DIR`` (weights as float16) with the figures and numbers in the cards::

    python bench/controlnet_report.py --barely runs/cn-barely/model --domain runs/cn-domain/model \\
        --segmenter runs/ct-segmenter/model --config runs/ct-label-diffusion/config.json \\
        --out bench/results/controlnet --ship assets/models
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRID_ROWS = 8


def evaluation_sets(config_path: str, n_train: int, resolution: int) -> dict:
    """Centred real canvases and class maps: all held-out complete slices and ``n_train`` training slices."""
    from core.normalization import denormalize_hu
    from core.training.label_config import LabelDiffusionConfig, load
    from core.training.label_data import load_examples

    cfg = load(LabelDiffusionConfig, config_path)
    d = cfg.data
    out = {}
    for name, holdout in (("held_out", True), ("training", False)):
        ex = load_examples(d, resolution=resolution, seed=0, holdout=holdout)
        pool = ex.complete
        picks = (
            pool
            if holdout
            else [pool[int(i)] for i in np.linspace(0, len(pool) - 1, min(n_train, len(pool)))]
        )
        items = [ex.example(k) for k in picks]
        out[name] = {
            "hu": np.stack(
                [denormalize_hu(it["image"][0], low=d.hu_range[0], high=d.hu_range[1]) for it in items]
            ),
            "classes": np.stack(
                [
                    ((it["control"].argmax(0) + 1) * (it["control"].sum(0) > 0)).astype(np.uint8)
                    for it in items
                ]
            ),
            "slices": [f"{ex.slices[k].source}:{ex.slices[k].index}" for k in picks],
        }
    out["classes"] = tuple(d.classes)
    return out


def generate(
    model_dir: str, classes_maps: np.ndarray, *, steps: int, scale: float, batch: int = 16
) -> np.ndarray:
    """One image per map (seed = index), batched through ``denoise``; ``(N, r, r)`` HU."""
    import torch

    from core.pipelines.controlnet import ControlNetPipeline, denoise
    from core.pipelines.label_condition import one_hot
    from core.pipelines.label_models import prompt_for

    pipe = ControlNetPipeline.from_pretrained(model_dir)
    m, spec = pipe.model, pipe.spec
    out = []
    for i in range(0, len(classes_maps), batch):
        chunk = classes_maps[i : i + batch]
        prompts = [prompt_for(spec, {spec.classes[int(c) - 1] for c in np.unique(cm) if c}) for cm in chunk]
        states = m.encode_prompt(prompts)
        control = torch.from_numpy(one_hot(chunk, len(spec.classes)))
        gens = [torch.Generator().manual_seed(i + j) for j in range(len(chunk))]
        x = denoise(m.unet, m.scheduler_config, states, gens, (1, spec.resolution, spec.resolution), controlnet=m.controlnet,
                    control=control, conditioning_scale=scale, num_inference_steps=steps, sampler="dpmsolver++")  # fmt: skip
        out.append(pipe.to_images(x))
    return np.concatenate(out)


def hu_medians(hu: np.ndarray, classes_maps: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    return {
        n: float(np.median(hu[classes_maps == k]))
        for k, n in enumerate(names, start=1)
        if (classes_maps == k).sum() >= 20
    }


def score(fake: np.ndarray, real: np.ndarray, conditions: np.ndarray, names, extractor, segmenter) -> dict:
    from core.metrics import compare_features
    from core.segment import faithfulness

    d = compare_features(extractor.extract(real), extractor.extract(fake), kid_subset_size=len(real))
    faith = faithfulness(conditions, segmenter(fake), names)
    med_f, med_r = hu_medians(fake, conditions, names), hu_medians(real, conditions, names)
    common = sorted(set(med_f) & set(med_r))
    return {
        "fid": round(d.fid, 3), "kid_mean": round(d.kid_mean, 5), "kid_std": round(d.kid_std, 5), "n": d.n_fake,
        "dice_mean": faith["dice_mean"], "dice_air_body": faith["dice_air_body"], "dice": faith["dice"],
        "median_hu_abs_diff": round(float(np.mean([abs(med_f[k] - med_r[k]) for k in common])), 1) if common else None,
        "median_hu": {k: [round(med_f[k], 1), round(med_r[k], 1)] for k in common},
    }  # fmt: skip


def grid(sets: dict, fakes: dict, names, png: Path) -> None:
    from PIL import Image

    from core.pipelines.label_condition import render_classes
    from core.windowing import apply_window

    def grey(x):
        return np.repeat(apply_window(x, low=-160.0, high=240.0)[..., None], 3, axis=-1)

    rows = []
    for split in ("training", "held_out"):
        n = len(sets[split]["classes"])
        for i in np.linspace(0, n - 1, GRID_ROWS // 2).astype(int):
            tiles = [render_classes(sets[split]["classes"][i], names)] + [
                grey(fakes[k][split][i]) for k in ("barely", "domain")
            ]
            rows.append(np.concatenate([*tiles, grey(sets[split]["hu"][i])], axis=1))
    img = np.concatenate(rows, axis=0)
    Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3), Image.NEAREST).save(png)


def ship(args, report: dict, out: Path) -> None:
    """Copy base, domain ControlNet and segmenter into ``args.ship`` (float16) with the comparison in the card."""
    from core.pipelines.label_models import read_label_model, weights_sha256
    from core.training.export import store_float16

    dest = Path(args.ship)
    spec = read_label_model(args.domain)
    base_src = spec.components["unet"]
    base_dst, cn_dst = dest / "ct-label-diffusion", dest / "ct-controlnet"
    for d in (base_dst, cn_dst):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(base_src, base_dst)
    shutil.copytree(Path(args.domain), cn_dst)
    shutil.copytree(Path(args.segmenter), cn_dst / "faithfulness_segmenter")
    store_float16(base_dst)
    note = store_float16(cn_dst)
    base_card = json.loads((base_dst / "model_card.json").read_text())
    base_card["storage"] = note
    (base_dst / "model_card.json").write_text(json.dumps(base_card, indent=2) + "\n")
    card = json.loads((cn_dst / "model_card.json").read_text())
    card["base"].update(
        {
            "path": "../ct-label-diffusion",
            "sha256": {c: weights_sha256(base_dst / c) for c in ("unet", "condition_embedding")},
        }
    )
    (cn_dst / "figures").mkdir(exist_ok=True)
    shutil.copy(out / "regimes_grid.png", cn_dst / "figures" / "regimes_grid.png")
    shutil.copy(out / "controlnet_report.json", cn_dst / "figures" / "controlnet_report.json")
    card["storage"] = note
    card["comparison"] = comparison(report)
    (cn_dst / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    read_label_model(cn_dst)  # the shipped folder loads and its base hashes match


def comparison(report: dict) -> dict:
    """The card's summary of the report (what the app's comparison accordion shows)."""
    rows = []
    for key in ("barely", "domain", "domain_base_alone"):
        r = report["models"][key]
        s = r["held_out"]
        rows.append({"regime": r["regime"], "base_steps": r["base_steps"], "fid": s["fid"], "kid_mean": s["kid_mean"], "kid_std": s["kid_std"],
                     "dice_mean": s["dice_mean"], "dice_air_body": s["dice_air_body"], "training_layouts": {k: r["training"][k] for k in ("fid", "kid_mean", "dice_mean")}})  # fmt: skip
    ref = report["reference"]
    return {
        "grid": "figures/regimes_grid.png", "regimes": rows, "split": "held-out label maps (rows above); training_layouts per row",
        "reference": {
            "segmenter Dice on the real held-out images (ceiling)": ref["held_out"]["real_dice_mean"],
            "segmenter Dice on the real training images": ref["training"]["real_dice_mean"],
            "FID neighbouring real slices (held-out)": ref["held_out"]["neighbouring_fid"],
            "FID real training vs real held-out": ref["real_train_vs_held_out_fid"],
        },
        "note": report["note"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--barely", required=True, help="ControlNet folder trained on the barely trained base")
    p.add_argument("--domain", required=True, help="ControlNet folder trained on the domain-trained base")
    p.add_argument("--segmenter", required=True, help="faithfulness segmenter folder (core.segment)")
    p.add_argument("--config", required=True, help="the base run's config.json (data and hold-out)")
    p.add_argument("--out", default="bench/results/controlnet")
    p.add_argument("--n-train", type=int, default=48, help="training slices evaluated (default %(default)s)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ship", metavar="DIR", help="also copy the models into DIR (e.g. assets/models)")
    args = p.parse_args(argv)

    import torch

    from core.metrics import CTFeatureExtractor, compare_features
    from core.metrics.baselines import neighbouring_slice_baseline
    from core.pipelines.label_models import read_label_model
    from core.segment import Segmenter, faithfulness

    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = read_label_model(args.domain)
    sets = evaluation_sets(args.config, args.n_train, spec.resolution)
    names = sets["classes"]
    extractor, segmenter = CTFeatureExtractor(), Segmenter(args.segmenter)

    reference = {}
    for split in ("held_out", "training"):
        real, cm = sets[split]["hu"], sets[split]["classes"]
        by_volume: dict[str, list] = {}
        for name, img in zip(sets[split]["slices"], real):
            by_volume.setdefault(name.split(":")[0], []).append(img)
        nb = (
            neighbouring_slice_baseline([np.stack(v) for v in by_volume.values()], extractor)
            if split == "held_out"
            else None
        )
        reference[split] = {"n": len(real), "real_dice_mean": faithfulness(cm, segmenter(real), names)["dice_mean"],
                            "real_dice": faithfulness(cm, segmenter(real), names)["dice"],
                            "neighbouring_fid": round(nb.fid, 3) if nb else None, "neighbouring_kid": round(nb.kid_mean, 5) if nb else None}  # fmt: skip
    ft, fh = extractor.extract(sets["training"]["hu"]), extractor.extract(sets["held_out"]["hu"])
    reference["real_train_vs_held_out_fid"] = round(compare_features(ft, fh, kid_subset_size=len(fh)).fid, 3)

    models = {
        "barely": (args.barely, 1.0),
        "domain": (args.domain, 1.0),
        "domain_base_alone": (args.domain, 0.0),
    }
    fakes: dict = {}
    report_models = {}
    for key, (folder, scale) in models.items():
        s = read_label_model(folder)
        fakes[key] = {
            split: generate(folder, sets[split]["classes"], steps=args.steps, scale=scale)
            for split in ("held_out", "training")
        }
        report_models[key] = {
            "folder": str(folder), "conditioning_scale": scale, "regime": s.card.get("control", {}).get("regime", key) if scale else "domain base alone (scale 0)",
            "base_steps": s.card.get("base", {}).get("steps"), "controlnet_steps": s.card.get("training", {}).get("steps"),
            **{split: score(fakes[key][split], sets[split]["hu"], sets[split]["classes"], names, extractor, segmenter) for split in ("held_out", "training")},
        }  # fmt: skip
        print(
            key,
            {
                sp: {k: report_models[key][sp][k] for k in ("fid", "kid_mean", "dice_mean")}
                for sp in ("held_out", "training")
            },
            flush=True,
        )
    grid(sets, fakes, names, out / "regimes_grid.png")
    report = {
        "models": report_models, "reference": reference, "classes": list(names),
        "sets": {k: sets[k]["slices"] for k in ("held_out", "training")}, "extractor": extractor.name, "steps": args.steps, "sampler": "dpmsolver++",
        "note": "One sample per label map (seed = index). FID with 128-d features at these sample sizes is biased upward: compare rows, "
        "not absolute values. Dice from a small segmenter trained on the real training canvases; its Dice on real images is the ceiling.",
        "wall_time_s": round(time.time() - t0, 1),
    }  # fmt: skip
    (out / "controlnet_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.ship:
        ship(args, report, out)
    print(f"report: {out / 'controlnet_report.json'}, grid: {out / 'regimes_grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
