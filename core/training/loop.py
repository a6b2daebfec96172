"""The accelerate training loop every diffusion training script shares.

A script describes *what* to train as a ``Task`` (model, data, loss, validation, export);
``run_loop(task, config)`` does the rest the same way for all of them: accelerate
(CPU, one GPU or several, mixed precision), AdamW + warm-up/cosine schedule, gradient
clipping, EMA of the trained parameters, ``metrics.jsonl``, sample grids, resumable
checkpoints and exported model folders::

    model_dir = run_loop(MyTask(config), config)     # config: a dataclass with LoopSettings' field names

A run folder holds ``config.json`` (the whole run config; ``config_history.json`` keeps the earlier
phases of a run resumed with a changed config), ``metrics.jsonl`` (loss per step; validation metrics every
``sample_every`` steps), ``samples/step_NNNNNN.png``, ``checkpoints/step_NNNNNN/``
(accelerate state + EMA + ``progress.json``; the newest ``keep_checkpoints`` are kept),
``model/`` (the EMA weights exported at every checkpoint) and ``model_step_NNNNNN/`` for
each of ``snapshot_steps``. Rerunning with the same ``out_dir`` resumes from the newest
checkpoint and continues *exactly*: batch ``s`` holds dataset indices that depend only on
``s`` (``core.training.data.StepIndices``) and the noise of step ``s`` comes from a generator seeded with
``(seed, s, rank)``, so a resumed run computes the same weights as an uninterrupted one.

Only parameters with ``requires_grad`` are optimised and averaged (a ControlNet on a
frozen base, LoRA adapters). Validation and export see the EMA weights swapped into the
model in place (``EMAModel.store/copy_to/restore``), so no second copy is built.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np


@dataclass(frozen=True)
class LoopSettings:
    """The loop's settings, and the base of every run config (each restates only the defaults it changes).

    ``from_config`` picks these names off any object, so a task may also pass its own config.
    """

    out_dir: str = "runs/train"
    steps: int = 1000
    batch_size: int = 8  # per process
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    lr_schedule: Literal["cosine", "constant"] = "constant"  # after a linear warm-up; "constant" makes any
    #                                step a finished model (steps=N equals a longer run at N) unless lr_decay_steps
    lr_decay_steps: int = 0  # "constant" only: the last N steps ramp the rate linearly down to
    #                          FINAL_LR_FRACTION of the peak (a run extended with a decay resumes into it)
    ema_decay: float = 0.999  # EMAModel max decay (with warm-up); 0 = no EMA, export the trained weights
    seed: int = 0  # weight init, data order and noise
    sample_every: int = 250  # steps between validations (sample grid + metrics)
    checkpoint_every: int = 250  # steps between resumable checkpoints (and model exports)
    keep_checkpoints: int = 2  # older checkpoint folders are deleted
    num_threads: int = 0  # torch CPU threads; 0 = torch's default (set 1-2 on a shared CPU)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    dataloader_workers: int = 0
    grad_clip: float = 1.0  # max gradient norm; 0 = no clipping
    weight_decay: float = 0.0
    snapshot_steps: tuple[int, ...] = ()  # extra exports model_step_NNNNNN/ (e.g. a barely trained base)

    @classmethod
    def from_config(cls, config: Any) -> LoopSettings:
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: getattr(config, n) for n in names if hasattr(config, n)})

    def check(self) -> None:
        """Raise ``InputError`` for a schedule the loop would not follow as written."""
        from core.errors import InputError

        if not 0 <= self.lr_decay_steps <= self.steps:
            raise InputError(
                f"lr_decay_steps must be between 0 and steps ({self.steps}), got {self.lr_decay_steps}"
            )
        if self.lr_decay_steps and self.lr_schedule != "constant":
            raise InputError(
                f"lr_decay_steps applies to the constant schedule only (lr_schedule is {self.lr_schedule!r}): "
                "set lr_schedule to constant in the config (synthdx train inpaint: --lr-schedule constant)"
            )


FINAL_LR_FRACTION = 0.1  # where an lr_decay_steps ramp ends, as a fraction of the peak rate


def lr_factor(step: float, *, warmup_steps: int, steps: int, decay_steps: int) -> float:
    """The "constant" schedule's multiplier of the peak rate after ``step`` steps: warm-up, flat, linear decay.

    The warm-up is diffusers' ``constant_with_warmup`` (``step / warmup_steps``); ``steps`` matters only
    through the decay, so with ``decay_steps=0`` any step is a finished model.
    """
    if step < warmup_steps:
        return step / warmup_steps
    start = steps - decay_steps
    if decay_steps <= 0 or step <= start:
        return 1.0
    return 1.0 - (1.0 - FINAL_LR_FRACTION) * min(1.0, (step - start) / decay_steps)


@dataclass(frozen=True)
class ExportInfo:
    """What an export knows about the run at that point."""

    step: int
    wall_time_s: float
    metrics: dict
    n_parameters: int  # trained parameters
    world_size: int


class Task(Protocol):
    """What a training script supplies to ``run_loop``."""

    description: str  # progress-bar label, e.g. "train inpaint"

    def build(self, device) -> Any:
        """The module to train (called after ``torch.manual_seed(seed)``); move frozen parts to ``device`` here."""

    def dataset(self) -> Any:
        """Map-style dataset whose item ``i`` is a pure function of ``(seed, i)``."""

    def summary(self) -> str:
        """One line printed at the start (data sizes, held-out sources ...)."""

    def loss(self, model, batch: dict, generator, device):
        """Scalar loss of one batch; draw all noise from ``generator`` (CPU) in a fixed order."""

    def validate(self, model, step: int, png: Path, device) -> dict:
        """Metrics and a sample grid at ``png``; ``model`` holds the EMA weights, in eval mode."""

    def export(self, model, info: ExportInfo, out: Path) -> None:
        """Write a model folder at ``out`` from ``model`` (EMA weights)."""


def newest_checkpoint(out: str | Path) -> tuple[Path | None, int, float]:
    """The run folder's newest checkpoint, its step and the wall time so far; ``(None, 0, 0.0)`` if none."""
    folder = Path(out) / "checkpoints"
    ckpts = sorted(folder.glob("step_*")) if folder.is_dir() else []
    if not ckpts:
        return None, 0, 0.0
    state = json.loads((ckpts[-1] / "progress.json").read_text())
    return ckpts[-1], int(state["step"]), float(state["elapsed_s"])


HISTORY_NAME = "config_history.json"


def record_run_config(config: dict, out: str | Path) -> None:
    """Write ``<out>/config.json``. When ``out`` holds checkpoints (a resume) and its config changed, first
    append the old one to ``<out>/config_history.json`` as ``{"until_step": step, "config": ...}``, so a
    model trained in phases (say, extended with a new rate schedule) can still be retrained: ``run_loop``
    calls this for every trainer. ``config`` is the JSON form of the run's config."""
    out = Path(out)
    config = json.loads(json.dumps(config))  # tuples -> lists, as the stored one reads back
    path, step = out / "config.json", newest_checkpoint(out)[1]
    if step > 0 and path.is_file():
        old = json.loads(path.read_text())
        same_folder = {**old, "out_dir": config.get("out_dir")}  # a moved run folder is the same phase
        if same_folder != config:
            history = config_history(out)
            history.append({"until_step": step, "config": old})
            (out / HISTORY_NAME).write_text(json.dumps(history, indent=2) + "\n")
    path.write_text(json.dumps(config, indent=2) + "\n")


def config_history(out: str | Path) -> list[dict]:
    """The earlier phases of the run in ``out`` (oldest first; empty for a run trained in one go)."""
    path = Path(out) / HISTORY_NAME
    return json.loads(path.read_text()) if path.is_file() else []


def _take_peak_rate(lr_sched, optimizer, learning_rate: float) -> None:
    """Make a resumed schedule use the config's peak rate, not the one its checkpoint stored (both
    schedules are LambdaLRs: rate = base rate x factor of the step), so an extension may change it."""
    inner = getattr(lr_sched, "scheduler", lr_sched)  # accelerate wraps the torch scheduler
    inner.base_lrs = [learning_rate] * len(inner.base_lrs)
    rates = [learning_rate * f(inner.last_epoch) for f in inner.lr_lambdas]
    for group, rate in zip(optimizer.param_groups, rates):
        group["initial_lr"], group["lr"] = learning_rate, rate
    inner._last_lr = rates  # what get_last_lr() reports (and metrics.jsonl logs) until the next step


def step_generator(seed: int, step: int, rank: int):
    """The CPU generator of step ``step`` on process ``rank`` (same on a resumed run)."""
    import torch

    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


def run_loop(task: Task, config: Any, *, progress: bool = True) -> Path:
    """Train (or resume) ``task``; returns the exported model folder ``<out_dir>/model``.

    ``config`` is the run's config dataclass: the loop takes its ``LoopSettings`` fields and records
    all of it (``record_run_config``), so no trainer can leave a run that cannot be retrained.
    """
    import torch
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from core.training.data import StepIndices

    s = LoopSettings.from_config(config)
    s.check()
    # 1. Processes, threads, folders, the run config
    if s.num_threads:
        torch.set_num_threads(s.num_threads)
    acc = Accelerator(mixed_precision=s.mixed_precision)
    out = Path(s.out_dir)
    if acc.is_main_process:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        record_run_config(dataclasses.asdict(config), out)  # before any checkpoint of this phase
    torch.manual_seed(s.seed)  # weight init only; data and noise have their own seeds

    # 2. Model, data, EMA, optimiser, learning-rate schedule
    model = task.build(acc.device)
    dataset = task.dataset()
    trainable = [p for p in model.parameters() if p.requires_grad]
    ema = (
        EMAModel(trainable, decay=s.ema_decay, use_ema_warmup=True, power=3 / 4) if s.ema_decay > 0 else None
    )
    optimizer = torch.optim.AdamW(trainable, lr=s.learning_rate, weight_decay=s.weight_decay)
    # Both schedules start with a linear warm-up; "constant" then stays flat (until lr_decay_steps),
    # so any checkpoint is a finished model (a run with steps=N equals a longer one at step N).
    if s.lr_schedule == "constant":
        # Our own LambdaLR (a plain function: a checkpoint does not store it, so a run resumed with
        # a longer or decaying schedule follows the new one from its step on).
        n = acc.num_processes  # accelerate steps the schedule once per process and step
        lr_sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda i: lr_factor(
                i / n, warmup_steps=s.warmup_steps, steps=s.steps, decay_steps=s.lr_decay_steps
            ),
        )
    else:
        lr_sched = get_scheduler(
            s.lr_schedule,
            optimizer,
            num_warmup_steps=s.warmup_steps * acc.num_processes,
            num_training_steps=s.steps * acc.num_processes,
        )
    model, optimizer, lr_sched = acc.prepare(model, optimizer, lr_sched)
    if ema is not None:
        ema.to(acc.device)
        acc.register_for_checkpointing(ema)

    # 3. Resume from the newest checkpoint
    ckpt, step, elapsed = newest_checkpoint(out)
    if ckpt is not None:
        acc.load_state(str(ckpt))
        _take_peak_rate(lr_sched, optimizer, s.learning_rate)
        acc.print(f"resumed from {ckpt} at step {step}")
    n_params = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in acc.unwrap_model(model).parameters())
    frozen = f" ({n_total / 1e6:.2f}M in all)" if n_total != n_params else ""
    acc.print(f"{n_params / 1e6:.2f}M trained parameters{frozen}; {task.summary()}")
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=s.batch_size,
        sampler=StepIndices(
            start=step,
            steps=s.steps,
            batch_size=s.batch_size,
            rank=acc.process_index,
            world=acc.num_processes,
        ),
        num_workers=s.dataloader_workers,
    )

    def with_ema(fn):
        """Run ``fn(unwrapped model)`` with the EMA weights swapped in, in eval mode."""
        net = acc.unwrap_model(model)
        params = [p for p in net.parameters() if p.requires_grad]
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        net.eval()
        try:
            with torch.no_grad():
                return fn(net)
        finally:
            if ema is not None:
                ema.restore(params)
            net.train()

    saved = [step]

    def save(step_now: int, metrics: dict) -> None:
        saved.append(step_now)
        ckpt = out / "checkpoints" / f"step_{step_now:06d}"
        acc.save_state(str(ckpt))
        if acc.is_main_process:
            wall = elapsed + time.time() - t0
            (ckpt / "progress.json").write_text(json.dumps({"step": step_now, "elapsed_s": wall}))
            for old in sorted((out / "checkpoints").glob("step_*"))[: -s.keep_checkpoints]:
                shutil.rmtree(old)
            info = ExportInfo(step_now, wall, metrics, n_params, acc.num_processes)
            targets = [out / "model"] + (
                [out / f"model_step_{step_now:06d}"] if step_now in s.snapshot_steps else []
            )
            with_ema(lambda net: [task.export(net, info, t) for t in targets])

    def validate_now(step_now: int, loss_avg: float | None) -> dict:
        if not acc.is_main_process:
            return {}
        metrics = {
            "step": step_now,
            **({"train_loss_ema": round(loss_avg, 5)} if loss_avg is not None else {}),
        }
        png = out / "samples" / f"step_{step_now:06d}.png"
        metrics.update(with_ema(lambda net: task.validate(net, step_now, png, acc.device)))
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        return metrics

    # 4. Training loop
    t0, metrics, loss_avg = time.time(), {}, None
    bar = tqdm(
        total=s.steps,
        initial=step,
        disable=not (progress and acc.is_local_main_process),
        desc=task.description,
        dynamic_ncols=True,
        file=sys.stdout,
    )
    model.train()
    for batch in loader:
        # Noise and timesteps from (seed, step, rank): a resumed run draws exactly the same.
        gen = step_generator(s.seed, step, acc.process_index)
        with acc.accumulate(model):
            loss = task.loss(model, batch, gen, acc.device)
            acc.backward(loss)
            if acc.sync_gradients and s.grad_clip > 0:
                acc.clip_grad_norm_(trainable, s.grad_clip)
            optimizer.step()
            lr_sched.step()
            optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(trainable)
        step += 1
        value = float(acc.gather(loss.detach()).mean())
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.4f}", lr=f"{lr_sched.get_last_lr()[0]:.1e}")
        if acc.is_main_process:
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(
                    json.dumps(
                        {
                            "step": step,
                            "loss": round(value, 6),
                            "lr": lr_sched.get_last_lr()[0],
                            "time_s": round(elapsed + time.time() - t0, 2),
                        }
                    )
                    + "\n"
                )
        if step % s.sample_every == 0 or step == s.steps:
            metrics = validate_now(step, loss_avg)
        if step % s.checkpoint_every == 0 or step == s.steps or step in s.snapshot_steps:
            save(step, metrics)
    bar.close()
    if saved[-1] != step or len(saved) == 1:
        # Resumed at the end (rerun with steps = a checkpoint's step to finish a run there): export it.
        save(step, validate_now(step, loss_avg))
    acc.wait_for_everyone()
    return out / "model"
