"""Model folders and model cards for trained inpainting models.

A model folder is a diffusers layout that ``CTInpaintPipeline.from_pretrained`` reads::

    <dir>/model_index.json             # diffusers-style index (unet + scheduler)
    <dir>/unet/config.json             # UNet2DModel config
    <dir>/unet/diffusion_pytorch_model.safetensors
    <dir>/scheduler/scheduler_config.json   # the DDPM training schedule
    <dir>/model_card.json              # HU range, crop rule, data + licences, steps, time, metrics, seed, code version

A user's own diffusers checkpoint with ``unet/`` and ``scheduler/`` works too; without a
card the pipeline assumes the defaults listed in ``core.pipelines.loading``.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

from core.training.config import CONTENT_CLASSES, TrainConfig, to_dict

CARD_NAME = "model_card.json"
CARD_FORMAT = 1
INFERENCE_FILL = 0.5  # mask extent / crop side at inference (training draws from fill_range around it)


def code_version() -> dict:
    """git commit of this checkout (and whether it had local changes), plus library versions."""
    import diffusers
    import torch

    repo = Path(__file__).resolve().parents[2]
    info = {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "core/"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
        info["core_modified"] = bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = "unknown"
    return info


def machine() -> str:
    """One line describing where training ran (CPU model / GPU names, thread count)."""
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} x {names[0]}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU only: {cpu}, torch using {torch.get_num_threads()} thread(s)"


def build_card(
    config: TrainConfig,
    *,
    step: int,
    wall_time_s: float,
    metrics: dict,
    n_parameters: int,
    data_names: list[str],
    world_size: int,
    earlier_phases: Sequence[dict] = (),
) -> dict:
    """The model card (JSON) of a model exported at ``step``; ``earlier_phases`` are the run's
    ``config_history.json`` entries (configs it ran under before a resume changed them)."""
    d = config.data
    trained_on = [s for s in d.sources if s.name in data_names]
    return {
        "card_format": CARD_FORMAT,
        "name": config.model_name,
        "task": "ct-inpainting",
        "description": "Masked inpainting of axial CT slices: a diffusers UNet2DModel sees (noisy target, masked "
        "image, mask) at the model resolution and predicts the noise or v (inputs.prediction_type); crops around "
        "the mask are scaled to that resolution. Synthetic output: not for diagnosis.",
        "inputs": {
            "resolution": config.model.resolution,
            "channels": ["noisy target", "masked image (0 inside the mask)", "mask (1 = repaint)"],
            "hu_range": list(d.hu_range),
            "crop_fill": INFERENCE_FILL,
            "conditioning": config.model.conditioning,
            "content_classes": list(CONTENT_CLASSES) if config.model.conditioning == "content" else [],
            "prediction_type": config.model.prediction_type,
            "input_scale": config.model.input_scale,
        },
        "training": {
            "steps": step,
            "batch_size": config.batch_size * world_size,
            "wall_time_s": round(wall_time_s, 1),
            "machine": machine(),
            "seed": config.seed,
            "n_parameters": n_parameters,
            "data": [
                {"name": s.name, "licence": s.licence, "attribution": s.attribution} for s in trained_on
            ],
            "holdout": list(d.holdout),
            "shape_library": list(d.shape_library) or "lesion masks of the training data",
            "config": to_dict(config),
            "earlier_phases": list(earlier_phases),
        },
        "metrics": metrics,
        "code_version": code_version(),
        "licences": sorted({s.licence for s in trained_on}),
        "intended_use": "Research and education: synthetic lesions/tissue for reader studies and method "
        "development. Outputs are synthetic and must never be used for diagnosis.",
        "reproduce": "Save training.config as JSON, set its steps to training.steps, and run "
        "`synthdx train inpaint --config THAT.json --out DIR` from the repository root at code_version.git_commit "
        "(data paths are relative to it); data order and noise depend only on the seed and the step. If "
        "training.earlier_phases lists configs, run each of them first (steps set to its until_step) with the "
        "same --out: each phase resumes where the one before stopped.",
    }


def export_model(unet, scheduler, card: dict, out: str | Path) -> Path:
    """Write a model folder (see module docstring); ``unet`` holds the weights to ship (EMA)."""
    import diffusers

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "CTInpaintPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", type(unet).__name__],
        "scheduler": ["diffusers", type(scheduler).__name__],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    (out / "README.md").write_text(card_markdown(card))
    return out


FLOAT16_NOTE = "Weights stored as float16 for shipping (trained in float32); loaded as float32."


def store_float16(folder: str | Path) -> str:
    """Rewrite every ``*.safetensors`` under ``folder`` with float16 floating tensors (half the bytes
    in ``assets/``; the loaders cast back to float32). Returns the note for the card's ``storage``."""
    import torch
    from safetensors.torch import load_file, save_file

    for f in sorted(Path(folder).rglob("*.safetensors")):
        tensors = load_file(str(f))
        save_file(
            {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}, str(f)
        )
    return FLOAT16_NOTE


def ship_folder(model_dir: str | Path, dest: str | Path) -> Path:
    """Copy an exported inpainting model folder to ``dest`` (replaced) with float16 weights, noted in its card."""
    import shutil

    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(model_dir, dest)
    card = json.loads((dest / CARD_NAME).read_text())
    card["storage"] = store_float16(dest)
    (dest / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    (dest / "README.md").write_text(card_markdown(card))
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m core.training.export MODEL_DIR DEST``: ship a trained model (e.g. into ``assets/models``)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("model_dir", help="an exported model folder, e.g. runs/ct-inpaint-demo/model")
    p.add_argument("dest", help="where to put it, e.g. assets/models/ct-inpaint (replaced)")
    a = p.parse_args(argv)
    print(ship_folder(a.model_dir, a.dest))
    return 0


def card_markdown(card: dict) -> str:
    """The model card as a short human-readable README (the JSON card is the reference)."""
    t, i, code = card["training"], card["inputs"], card["code_version"]
    hu = f"{i['hu_range'][0]:g}..{i['hu_range'][1]:g}"
    scale = f" x {i['input_scale']:g} (input_scale)" if i.get("input_scale", 1.0) != 1.0 else ""
    lines = [
        f"# {card['name']}",
        "",
        card["description"],
        "",
        f"**Intended use.** {card.get('intended_use', '')}",
        "",
        "## Training data and attribution",
        "",
        "| source | licence | attribution |",
        "|---|---|---|",
        *[f"| {d['name']} | {d['licence']} | {d['attribution']} |" for d in t["data"]],
        "",
        f"Held out (never trained on; used for validation): {', '.join(t['holdout']) or 'none'}.",
        f"Transplanted tumour outlines: {t['shape_library']}.",
        "",
        "## Training",
        "",
        f"- steps: {t['steps']} x batch {t['batch_size']}; wall time {t['wall_time_s'] / 3600:.2f} h on {t['machine']}",
        *_phase_lines(t.get("earlier_phases", []), t["config"]),
        f"- parameters: {t['n_parameters']:,}; seed {t['seed']}",
        f"- input: {i['resolution']} px crops, HU {hu} -> [-1, 1]{scale}, classes {i['content_classes'] or 'none'}",
        f"- metrics at export: {json.dumps(card.get('metrics', {}))}",
        f"- code: git {code.get('git_commit')}, diffusers {code.get('diffusers')}, torch {code.get('torch')}",
        "",
        f"**Reproduce.** {card.get('reproduce', '')}",
        "",
    ]
    if "quality" in card:
        lines += _quality_markdown(card["quality"])
    return "\n".join(lines)


def _phase_lines(phases: Sequence[dict], final: dict) -> list[str]:
    """One line per earlier training phase: where it stopped, its rate schedule, and which other
    settings the next phase changed (the configs themselves are in the JSON card)."""
    lines = []
    for phase, after in zip(phases, [*[p["config"] for p in phases[1:]], final]):
        c = phase["config"]
        decay = f", last {c['lr_decay_steps']} decaying" if c.get("lr_decay_steps") else ""
        changed = sorted(_changed_settings(c, after) - {"steps", "learning_rate", "lr_schedule", "lr_decay_steps"})
        then = f"; the next phase changed {', '.join(changed)}" if changed else ""
        lines.append(
            f"- an earlier phase ran to step {phase['until_step']} "
            f"(learning rate {c['learning_rate']:g}, {c['lr_schedule']}{decay}){then}; then resumed with training.config"
        )
    return lines


def _changed_settings(a: dict, b: dict, prefix: str = "") -> set[str]:
    """Dotted names of the settings that differ between two JSON configs (lists compare whole)."""
    changed = set()
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            changed |= _changed_settings(x, y, f"{prefix}{key}.")
        elif x != y and key != "out_dir":
            changed.add(prefix + key)
    return changed


def _quality_markdown(q: dict) -> list[str]:
    """The card's ``quality`` (``bench/inpaint_quality.py``) as a table of FID ratios."""
    methods = ("model", "biharmonic", "mean_fill", "noise")
    lines = [
        "## Quality on held-out cases",
        "",
        (
            f"{q['note']} Cases {', '.join(q['held_out_cases'])}; {q['sampler']['name']}, "
            f"{q['sampler']['steps']} steps{_blend_note(q['sampler'])}; features: {q['features']}; "
            f"measured by `{q['benchmark']}`."
        ),
        "",
        "| region / view | n | " + " | ".join(methods) + " | model vs baselines (paired permutation test) |",
        "|---|---|" + "---|" * (len(methods) + 1),
    ]
    for key, row in q["ratio_to_neighbouring_slices"].items():
        cells = [
            f"{row[m]['fid_ratio']:.2f}" if m in row and row[m]["fid_ratio"] is not None else "-"
            for m in methods
        ]
        cells.append(_versus_cell(row.get("model_vs")))
        lines.append(f"| {key} | {row['n']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _blend_note(sampler: dict) -> str:
    """Whether the model's regions were faded into the original pixels at the mask's edge (which the
    baselines never see); cards measured before ``blend_px`` was recorded used the default 2 px."""
    blend = sampler.get("blend_px", 2.0)
    if blend == 0:
        return ", no edge blending (every method fills the mask from the pixels outside it only)"
    return f", edge blended over {blend:g} px into the original pixels"


def _versus_cell(versus: dict | None) -> str:
    """The permutation tests in one cell: "lower than all 3", or each baseline the model does not
    clearly beat, with the ratio difference model - baseline and the p-value of "model lower"."""
    if not versus:
        return "-"
    open_ = {m: v for m, v in versus.items() if v["verdict"] != "model lower"}
    if not open_:
        return f"lower than all {len(versus)}"
    return "; ".join(
        f"{m}: {v['verdict']}, {v['fid_ratio_diff']:+.2f} (p = {v['p_model_lower']:.2f})"
        for m, v in open_.items()
    )


if __name__ == "__main__":
    raise SystemExit(main())
