"""Inpainting quality on held-out CT: FID/KID of inpainted regions against the real ones.

    python bench/inpaint_quality.py [--model assets/models/ct-inpaint] [--steps 25] [--per-case 24]

Cases: the held-out sources named by the inpainting model's card (``training.holdout``;
without a model, by ``core/training/recipes/ct_inpaint_demo.json``), never trained on. The
CT feature network (``assets/models/ct-features``) held them out as well. Regions, per case:

* ``lesion``: the tumour mask on slices where it covers >= 40 px (content "lesion");
* ``tissue``: a random ellipse inside the body, away from the tumour (content "tissue").

All methods run in this call, on the same regions, each editing a copy of the slice:

* ``model``: ``CTInpaintPipeline`` (``--sampler``, default DPM-Solver++, ``--steps`` steps, one seed per region)
  with ``blend_px=0``: the app's default fades the sample into the *original* pixels over the
  mask's outer 2 px, which here are the ground truth the baselines never see (a third to half
  of a small ellipse's pixels); every method fills the mask from the pixels outside it alone;
* ``mean_fill``: the mean HU of the known (unmasked) pixels of the pipeline's crop;
* ``noise``: Gaussian noise with those pixels' mean and standard deviation;
* ``biharmonic``: ``skimage.restoration.inpaint_biharmonic`` on that crop.

Each region is scored in two views, real crop against the method's crop at the same place,
with our CT features: ``context``, the pipeline's own crop (the mask spans at most half its
side, >= 64 px, native pixels) and ``tight``, a square around the mask plus 4 px (the
inpainted pixels dominate; resized to 64 px by the extractor). ``neighbouring_slice`` is
the same boxes on slice z +/- 1 (real vs real) and ``*_ratio`` a method's FID (KID) over it.
Methods change only the masked pixels while a neighbouring slice changes the whole box, so
ratios below 1 are possible, mostly in the context view. KID uses the paired estimator (row
i of both sets is the same region); its ratio is null where the baseline KID is within its
subset spread of 0. ``model_vs`` settles "the model beats a baseline" with a paired permutation
test over regions (``--permutations`` label swaps): the FID-ratio difference model - baseline,
the one-sided p-value of "the model's FID is lower", the middle 95 % of the differences under
swapped labels and a verdict ("model lower" or "baseline lower" at p < 0.05, else "not
separable"). Also PSNR/SSIM inside the mask (HU clipped to [-1000, 1000], data range
2000 HU). FID of ~60 samples in 128 dimensions is biased upward: compare methods with each
other at equal N, never with FIDs from elsewhere. Writes ``bench/results/inpaint_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "core" / "training" / "recipes" / "ct_inpaint_demo.json"
MIN_LESION_PX = 40
HU_CLIP = (-1000.0, 1000.0)


def held_out_sources(model_dir: Path) -> tuple[list[dict], str]:
    """The held-out data sources (dicts with image/labels/lesion_labels) and where the list came from."""
    card_path = model_dir / "model_card.json"
    if card_path.is_file():
        training = json.loads(card_path.read_text())["training"]
        holdout, sources, origin = training["holdout"], training["config"]["data"]["sources"], str(card_path)
    else:
        recipe = json.loads(RECIPE.read_text())
        holdout, sources, origin = recipe["data"]["holdout"], recipe["data"]["sources"], str(RECIPE)
    return [s for s in sources if s["name"] in holdout], origin


def _data_path(path: str, data_dir: Path) -> Path:
    """A source path of a recipe (relative to ``--data``) or of a card (as the training run saw it,
    e.g. ``../shared/data/ct/...`` from the repository root)."""
    for candidate in (data_dir / path, ROOT / path):
        if candidate.exists():
            return candidate
    return data_dir / path


def make_regions(
    source: dict, data_dir: Path, per_case: int, rng: np.random.Generator
) -> tuple[np.ndarray, list]:
    """``(volume, [(kind, mask, {view: CropBox})])``: lesion and tissue regions whose crops fit the slice."""
    from core.io import load_volume
    from core.masks import RandomEllipse, body_mask, tumor_mask, validate_mask

    vol = load_volume(_data_path(source["image"], data_dir), labels=_data_path(source["labels"], data_dir))
    lesion = tumor_mask(vol.labels, lesion_labels=tuple(source["lesion_labels"]))  # (z, y, x) bool
    hu = vol.array

    def region(kind: str, z: int, mask: np.ndarray):
        try:
            validate_mask(mask, image_shape=hu.shape[1:], min_context_px=4)
        except ValueError:
            return None
        boxes = {"context": context_box(z, mask), "tight": tight_box(z, mask)}
        return None if None in boxes.values() else (kind, mask, boxes)

    lesions = [region("lesion", z, lesion[z]) for z in range(hu.shape[0]) if lesion[z].sum() >= MIN_LESION_PX]
    lesions = [r for r in lesions if r is not None]
    keep = np.unique(np.linspace(0, len(lesions) - 1, min(per_case, len(lesions))).astype(int))
    lesions = [lesions[i] for i in keep]  # evenly spread over the tumour's slices
    tissue = []
    for z in rng.permutation(np.arange(1, hu.shape[0] - 1)):
        allowed = body_mask(hu[z]) & ~_dilate(lesion[z], 6)
        mask = RandomEllipse(radius_px=(6.0, 14.0))(hu.shape[1:], rng, region=allowed)
        r = None if mask is None else region("tissue", int(z), mask)
        if r is not None:
            tissue.append(r)
        if len(tissue) == per_case:
            break
    return hu, lesions + sorted(tissue, key=lambda r: r[2]["context"].z)


def context_box(z: int, mask: np.ndarray):
    """The pipeline's own crop (mask <= half its side, >= 64 px), or None when it leaves the slice."""
    from core.masks import bbox
    from core.metrics import CropBox
    from core.pipelines.crops import crop_box

    b = crop_box(bbox(mask), mask.shape, resolution=64, fill=0.5)
    if b.row0 < 0 or b.col0 < 0 or b.row0 + b.size > mask.shape[0] or b.col0 + b.size > mask.shape[1]:
        return None
    return CropBox(z, b.row0, b.row0 + b.size, b.col0, b.col0 + b.size)


def tight_box(z: int, mask: np.ndarray, margin: int = 4):
    """A square around the mask's bounding box plus ``margin`` px (>= 16 px), inside the slice."""
    from core.masks import bbox
    from core.metrics import CropBox

    r0, r1, c0, c1 = bbox(mask)
    side = max(16, r1 - r0 + 2 * margin, c1 - c0 + 2 * margin)
    if side > min(mask.shape):
        return None
    spans = ((r0, r1, mask.shape[0]), (c0, c1, mask.shape[1]))
    starts = [min(max((lo + hi - side) // 2, 0), n - side) for lo, hi, n in spans]
    return CropBox(z, starts[0], starts[0] + side, starts[1], starts[1] + side)


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=px) if mask.any() else mask


def fill_baselines(
    image: np.ndarray, mask: np.ndarray, box, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The three classical fills of ``mask``, computed on the crop ``box``, as whole edited slices."""
    from skimage.restoration import inpaint_biharmonic

    win = (slice(box.y0, box.y1), slice(box.x0, box.x1))
    crop, m = image[win], mask[win]
    known = crop[~m]
    fills = {
        "mean_fill": np.where(m, known.mean(), crop),
        "noise": np.where(m, rng.normal(known.mean(), known.std(), crop.shape), crop),
        "biharmonic": inpaint_biharmonic(crop.astype(np.float64), m),
    }
    out = {}
    for name, filled in fills.items():
        edited = image.copy()
        edited[win] = filled.astype(np.float32)
        out[name] = edited
    return out


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--model", default=str(ROOT / "assets" / "models" / "ct-inpaint"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--steps", type=int, default=25, help="sampler steps of the model")
    parser.add_argument(
        "--sampler", default="dpmsolver++", help="dpmsolver++ (default), sde-dpmsolver++, ddim or repaint"
    )
    parser.add_argument("--per-case", type=int, default=24, help="regions of each kind per held-out case")
    parser.add_argument("--kid-subset-size", type=int, default=50, help="capped at half the regions")
    parser.add_argument(
        "--permutations", type=int, default=500, help="label swaps of the model-vs-baseline tests"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "inpaint_quality.json"))
    parser.add_argument(
        "--update-card", action="store_true", help="store the figures in the model card and README"
    )
    args = parser.parse_args()

    import torch

    from core.metrics import (
        CTFeatureExtractor,
        compare_features,
        neighbouring_slice_baseline,
        paired_fid_permutation_test,
        psnr,
        ratio_to_baseline,
        ssim,
    )
    from core.metrics.baselines import extract_features

    torch.set_num_threads(1)
    t0 = time.time()
    model_dir, data_dir = Path(args.model), Path(args.data)
    rng = np.random.default_rng(args.seed)
    pipe, model_note = None, None
    if (model_dir / "model_card.json").is_file():
        from core.pipelines.ct_inpaint import CTInpaintPipeline

        pipe = CTInpaintPipeline.from_pretrained(model_dir)
    else:
        model_note = f"no model at {model_dir}: only the baselines were measured"
        print(model_note)
    sources, holdout_origin = held_out_sources(model_dir)
    extractor = CTFeatureExtractor()

    # 1. Regions; every method edits a copy of the slice; crops[(kind, view)][method] = list of HU crops
    crops: dict[tuple, dict[str, list]] = {}
    boxes: dict[tuple, list[list]] = {}
    volumes, paired, model_time, n_regions = [], {}, 0.0, 0
    for c, source in enumerate(sources):
        hu, regions = make_regions(source, data_dir, args.per_case, rng)
        volumes.append(hu)
        for kind, mask, views in regions:
            z = views["context"].z
            edited = fill_baselines(hu[z], mask, views["context"], rng)
            if pipe is not None:
                t = time.time()
                content = kind if kind in pipe.content_classes else None
                seed = args.seed + n_regions
                out = pipe(
                    hu[z],
                    mask,
                    num_inference_steps=args.steps,
                    sampler=args.sampler,
                    seed=seed,
                    content=content,
                    blend_px=0.0,  # no ground truth inside the mask, as for the baselines
                )
                edited["model"] = out.image
                model_time += time.time() - t
            n_regions += 1
            for view, box in views.items():
                win = (slice(box.y0, box.y1), slice(box.x0, box.x1))
                for name, img in {"real": hu[z], **edited}.items():
                    crops.setdefault((kind, view), {}).setdefault(name, []).append(img[win])
                boxes.setdefault((kind, view), [[] for _ in sources])[c].append(box)
            ctx = views["context"]
            win = (slice(ctx.y0, ctx.y1), slice(ctx.x0, ctx.x1))
            real = np.clip(hu[z][win], *HU_CLIP)
            for name, img in edited.items():  # paired, inside the mask, view-independent
                fake, m = np.clip(img[win], *HU_CLIP), mask[win]
                paired.setdefault((kind, name), []).append(
                    (psnr(real, fake, data_range=2000, mask=m), ssim(real, fake, data_range=2000, mask=m))
                )

    # 2. Scores: every method against the real crops, and the neighbouring-slice baseline on the same boxes
    results: dict[str, dict] = {}
    for (kind, view), by_method in crops.items():
        n = len(by_method["real"])
        # Subsets of at most half the regions, so the KID spread over subsets means something.
        size = min(args.kid_subset_size, max(2, n // 2))
        kid = {"kid_subsets": 100, "kid_subset_size": size, "seed": args.seed}
        feats = {name: extract_features(extractor, imgs) for name, imgs in by_method.items()}
        base = neighbouring_slice_baseline(volumes, extractor, boxes=boxes[(kind, view)], **kid)
        entry = {"n": n, "kid_subset_size": kid["kid_subset_size"], "neighbouring_slice": _scores(base)}
        for name, f in feats.items():
            if name != "real":
                s = compare_features(feats["real"], f, paired=True, **kid)  # row i: the same region
                ratio = ratio_to_baseline(s, base)
                entry[name] = {**_scores(s), "fid_ratio": _r(ratio.fid, 3), "kid_ratio": _r(ratio.kid, 3)}
        if "model" in feats:
            swaps = np.random.default_rng(args.seed)
            entry["model_vs"] = {
                m: _versus(
                    paired_fid_permutation_test(
                        feats["real"],
                        feats["model"],
                        feats[m],
                        num_permutations=args.permutations,
                        generator=swaps,
                    ),
                    base.fid,
                )
                for m in METHODS[1:]
            }
        results.setdefault(kind, {})[view] = entry
        print(kind, view, json.dumps(entry))
    for (kind, name), values in paired.items():
        p = np.array(values)
        psnr_db = float(np.mean(p[np.isfinite(p[:, 0]), 0]))  # identical regions (inf dB) left out
        scores = {"psnr_db": _r(psnr_db, 2), "ssim": _r(p[:, 1].mean(), 4)}
        results[kind].setdefault("paired_in_mask", {})[name] = scores

    report = {
        "benchmark": "inpaint_quality",
        "model": None if pipe is None else pipe.specs[0].as_dict(),
        "model_note": model_note,
        "held_out_cases": [s["name"] for s in sources],
        "held_out_from": os.path.relpath(holdout_origin, ROOT),
        "features": {
            "extractor": extractor.name,
            "sha256": extractor.card["sha256"],
            "held_out_by_extractor": extractor.card["data"]["held_out"],
        },
        "views": {
            "context": "the pipeline's crop: mask spans <= half its side, >= 64 px, native pixels",
            "tight": "square around the mask's bounding box + 4 px, resized to 64 px by the extractor",
        },
        "sampler": {"name": args.sampler, "steps": args.steps, "seed": args.seed, "blend_px": 0.0},
        "kid": {"estimator": "unbiased MMD^2, cubic polynomial kernel, paired rows", "subsets": 100},
        "model_vs": {
            "test": "paired permutation test of FID, one-sided, alpha 0.05",
            "permutations": args.permutations,
        },
        "results": results,
        "model_seconds_per_region": None if pipe is None else round(model_time / n_regions, 2),
        "wall_time_s": round(time.time() - t0, 1),
        "torch_threads": 1,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    if args.update_card and pipe is not None:
        update_card(model_dir, report)
    return 0


METHODS = ("model", "biharmonic", "mean_fill", "noise")


def card_summary(report: dict) -> dict:
    """The card's ``quality``: FID/KID ratios to the neighbouring-slice baseline and PSNR/SSIM per method."""
    ratios, paired = {}, {}
    for kind, views in report["results"].items():
        for view in ("context", "tight"):
            e = views[view]
            ratios[f"{kind}/{view}"] = {
                m: {"fid_ratio": e[m]["fid_ratio"], "kid_ratio": e[m]["kid_ratio"]} for m in METHODS if m in e
            }
            ratios[f"{kind}/{view}"]["n"] = e["n"]
            if "model_vs" in e:
                ratios[f"{kind}/{view}"]["model_vs"] = e["model_vs"]
        paired[kind] = views["paired_in_mask"]
    return {
        "benchmark": "bench/inpaint_quality.py",
        "held_out_cases": report["held_out_cases"],
        "sampler": report["sampler"],
        "features": report["features"]["extractor"],
        "ratio_to_neighbouring_slices": ratios,
        "paired_in_mask": paired,
        "note": "FID (KID) of a method's inpainted regions vs the real ones over the same statistic between "
        "neighbouring real slices at the same boxes; lower is better, 1 = as close as adjacent real slices.",
    }


def update_card(model_dir: Path, report: dict) -> None:
    """Write ``card_summary(report)`` into ``model_card.json`` and re-render the folder's README."""
    from core.pipelines.loading import read_model_folder
    from core.training.export import card_markdown

    path = model_dir / "model_card.json"
    if (report.get("model") or {}).get("sha256") != read_model_folder(model_dir).sha256:
        raise SystemExit(f"{model_dir}: the report was measured on other weights (sha256 differs)")
    card = json.loads(path.read_text())
    card["quality"] = card_summary(report)
    path.write_text(json.dumps(card, indent=2) + "\n")
    (model_dir / "README.md").write_text(card_markdown(card))
    print(f"updated {path}")


def _versus(c, baseline_fid: float) -> dict:
    """A permutation test's result with FID differences in units of the neighbouring-slice FID, so it
    reads like the ratios."""
    verdict = {"a lower": "model lower", "b lower": "baseline lower"}.get(c.verdict(), c.verdict())
    scale = 1.0 / baseline_fid
    return {
        "fid_ratio_diff": _r(c.observed * scale, 3),
        "p_model_lower": _r(c.p_a_lower, 4),
        "null_95": [_r(c.null_low * scale, 3), _r(c.null_high * scale, 3)],
        "verdict": verdict,
    }


def _r(x: float, nd: int):
    return None if not np.isfinite(x) else round(float(x), nd)


def _scores(s) -> dict:
    return {"fid": _r(s.fid, 4), "kid_mean": _r(s.kid_mean, 5), "kid_std": _r(s.kid_std, 5)}


if __name__ == "__main__":
    raise SystemExit(main())
