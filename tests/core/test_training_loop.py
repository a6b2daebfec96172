"""The shared training loop on a tiny task: exact resume, frozen parameters, EMA swap, snapshots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.training.loop import LoopSettings, run_loop, step_generator


class ToyData:
    """Item i: a noisy point on y = 3x - 1, a pure function of (seed, i)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        x = rng.uniform(-1, 1, 4).astype(np.float32)
        return {"x": x, "y": (3 * x - 1).astype(np.float32)}


class ToyTask:
    description = "toy"

    def __init__(self, seed: int = 0, *, freeze_bias: bool = False):
        self.seed, self.freeze_bias, self.validated, self.exported = seed, freeze_bias, [], []

    def build(self, device):
        import torch

        net = torch.nn.Linear(4, 4)
        net.bias.requires_grad_(not self.freeze_bias)
        self.bias_at_start = net.bias.detach().clone()
        return net

    def dataset(self):
        return ToyData(self.seed)

    def summary(self) -> str:
        return "toy data"

    def loss(self, model, batch, gen, device):
        import torch

        jitter = torch.randn(batch["x"].shape, generator=gen) * 0.01  # noise from the step's generator
        return ((model(batch["x"] + jitter) - batch["y"]) ** 2).mean()

    def validate(self, model, step, png, device) -> dict:
        assert not model.training
        self.validated.append(step)
        return {"weight_sum": float(model.weight.sum())}

    def export(self, model, info, out: Path) -> None:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "w.safetensors"))
        (out / "info.json").write_text(json.dumps({"step": info.step, "n": info.n_parameters}))
        self.exported.append((info.step, out.name))


def settings(out: Path, **kw) -> LoopSettings:
    base = dict(
        out_dir=str(out),
        steps=6,
        batch_size=4,
        learning_rate=0.05,
        warmup_steps=1,
        sample_every=3,
        checkpoint_every=2,
        num_threads=1,
        ema_decay=0.9,
    )
    return LoopSettings(**{**base, **kw})


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.numpy() for k, v in load_file(folder / "w.safetensors").items()}


def test_settings_pick_matching_fields_off_any_config() -> None:
    from core.training.config import TrainConfig

    s = LoopSettings.from_config(TrainConfig(out_dir="x", steps=7, lr_schedule="constant"))
    assert (s.out_dir, s.steps, s.lr_schedule, s.batch_size, s.snapshot_steps) == ("x", 7, "constant", 8, ())


def test_step_generators_depend_on_seed_step_and_rank_only() -> None:
    import torch

    a, b = step_generator(0, 5, 0), step_generator(0, 5, 0)
    assert torch.equal(torch.randn(3, generator=a), torch.randn(3, generator=b))
    draws = {
        tuple(torch.randn(2, generator=step_generator(*k)).tolist())
        for k in [(0, 5, 0), (1, 5, 0), (0, 6, 0), (0, 5, 1)]
    }
    assert len(draws) == 4


def test_resumed_run_equals_uninterrupted_run_and_snapshots_are_exported(tmp_path: Path) -> None:
    task = ToyTask()
    model = run_loop(task, settings(tmp_path / "a", snapshot_steps=(3,)), progress=False)
    assert (tmp_path / "a" / "model_step_000003" / "w.safetensors").is_file()
    assert json.loads((tmp_path / "a" / "model_step_000003" / "info.json").read_text())["step"] == 3
    assert task.validated == [3, 6] and sorted(
        p.name for p in (tmp_path / "a" / "checkpoints").iterdir()
    ) == ["step_000004", "step_000006"]
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3, 4, 5, 6]
    assert [x["step"] for x in lines if "weight_sum" in x] == [3, 6]
    full = weights(model)

    shutil.rmtree(tmp_path / "a" / "checkpoints" / "step_000006")
    shutil.rmtree(model)
    run_loop(ToyTask(), settings(tmp_path / "a", snapshot_steps=(3,)), progress=False)  # resumes at step 4
    resumed = weights(model)
    assert all(np.array_equal(full[k], resumed[k]) for k in full)

    other = weights(run_loop(ToyTask(), settings(tmp_path / "b", seed=1), progress=False))
    assert not np.array_equal(other["weight"], full["weight"])


def test_ema_weights_are_exported_and_the_trained_weights_are_restored(tmp_path: Path) -> None:
    with_ema = weights(run_loop(ToyTask(), settings(tmp_path / "ema"), progress=False))
    no_ema = weights(run_loop(ToyTask(), settings(tmp_path / "raw", ema_decay=0.0), progress=False))
    # The same training (the swap restored the trained weights after each validation/export) ...
    # ... exported as an average (EMA) or as trained.
    assert not np.allclose(with_ema["weight"], no_ema["weight"])
    raw_long = weights(
        run_loop(
            ToyTask(),
            settings(tmp_path / "raw_ckpt", ema_decay=0.0, sample_every=1, checkpoint_every=1),
            progress=False,
        )
    )
    assert all(
        np.array_equal(no_ema[k], raw_long[k]) for k in no_ema
    )  # validating every step changes nothing


def test_frozen_parameters_stay_put(tmp_path: Path) -> None:
    task = ToyTask(freeze_bias=True)
    model = run_loop(task, settings(tmp_path / "frozen"), progress=False)
    w = weights(model)
    np.testing.assert_array_equal(w["bias"], task.bias_at_start.numpy())
    assert json.loads((model / "info.json").read_text())["n"] == 16  # only the 4 x 4 weight is trained


def test_a_constant_schedule_run_can_be_finished_at_a_checkpoint(tmp_path: Path) -> None:
    long = settings(tmp_path / "long", lr_schedule="constant", steps=4)
    run_loop(ToyTask(), long, progress=False)
    shutil.rmtree(tmp_path / "long" / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "long" / "model")
    from dataclasses import replace

    finished = run_loop(ToyTask(), replace(long, steps=2), progress=False)  # trains nothing, exports step 2
    short = run_loop(ToyTask(), replace(long, steps=2, out_dir=str(tmp_path / "short")), progress=False)
    a, b = weights(finished), weights(short)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((finished / "info.json").read_text())["step"] == 2


def _logged_lrs(out: Path) -> list[float]:
    return [json.loads(x)["lr"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"lr"' in x]


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_learning_rate_warms_up_then_follows_the_schedule(tmp_path: Path, schedule: str) -> None:
    run_loop(
        ToyTask(),
        settings(tmp_path / schedule, lr_schedule=schedule, warmup_steps=2, steps=6),
        progress=False,
    )
    lrs = _logged_lrs(tmp_path / schedule)
    assert lrs[:2] == pytest.approx([0.025, 0.05])  # logged after steps 1 and 2 of a 2-step warm-up
    assert (lrs[-1] < 0.05) if schedule == "cosine" else (lrs[-1] == pytest.approx(0.05))


def test_a_constant_run_can_end_with_a_linear_decay_even_when_resumed_into_it(tmp_path: Path) -> None:
    from dataclasses import replace

    from core.training.loop import lr_factor

    assert [lr_factor(i, warmup_steps=2, steps=10, decay_steps=4) for i in (1, 2, 6, 8, 10, 12)] == (
        pytest.approx([0.5, 1.0, 1.0, 0.55, 0.1, 0.1])
    )
    whole = settings(tmp_path / "whole", lr_schedule="constant", warmup_steps=2, steps=6, lr_decay_steps=2)
    run_loop(ToyTask(), whole, progress=False)
    assert _logged_lrs(tmp_path / "whole") == pytest.approx([0.025, 0.05, 0.05, 0.05, 0.0275, 0.005])
    # the same run, first trained flat to step 4, then resumed with the longer, decaying schedule
    part = replace(whole, out_dir=str(tmp_path / "part"), steps=4, lr_decay_steps=0)
    run_loop(ToyTask(), part, progress=False)
    resumed = run_loop(ToyTask(), replace(part, steps=6, lr_decay_steps=2), progress=False)
    assert _logged_lrs(tmp_path / "part") == pytest.approx(_logged_lrs(tmp_path / "whole"))
    a, b = weights(resumed), weights(tmp_path / "whole" / "model")
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_resumed_run_takes_the_new_peak_rate_not_the_checkpointed_one(tmp_path: Path) -> None:
    from dataclasses import replace

    # An extension restarts at a lower peak (here 0.02 instead of 0.05) and decays from there.
    first = settings(tmp_path / "run", lr_schedule="constant", warmup_steps=2, steps=4)
    run_loop(ToyTask(), first, progress=False)
    run_loop(ToyTask(), replace(first, learning_rate=0.02, steps=8, lr_decay_steps=4), progress=False)
    assert _logged_lrs(tmp_path / "run") == pytest.approx(
        [0.025, 0.05, 0.05, 0.05, 0.0155, 0.011, 0.0065, 0.002]
    )


def test_the_loop_records_the_run_config_and_keeps_a_changed_one_as_an_earlier_phase(tmp_path: Path) -> None:
    from dataclasses import asdict, replace

    from core.training.loop import config_history

    out = tmp_path / "run"
    first = settings(out, steps=4)
    run_loop(ToyTask(), first, progress=False)  # a fresh run: config.json, nothing to keep
    stored = json.loads((out / "config.json").read_text())
    assert stored == json.loads(json.dumps(asdict(first))) and stored["steps"] == 4
    assert config_history(out) == []
    shutil.move(out, tmp_path / "moved")  # a moved run folder is the same phase
    moved = replace(first, out_dir=str(tmp_path / "moved"))
    run_loop(ToyTask(), moved, progress=False)
    assert config_history(tmp_path / "moved") == []
    run_loop(ToyTask(), replace(moved, learning_rate=0.02, steps=6), progress=False)  # resumed at 4, new rate
    assert config_history(tmp_path / "moved") == [
        {"until_step": 4, "config": json.loads(json.dumps(asdict(moved)))}
    ]
    assert json.loads((tmp_path / "moved" / "config.json").read_text())["learning_rate"] == 0.02


def test_a_schedule_the_loop_would_not_follow_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from core.errors import InputError

    with pytest.raises(InputError, match="constant schedule only"):  # cosine ignored lr_decay_steps
        run_loop(ToyTask(), settings(tmp_path / "a", lr_schedule="cosine", lr_decay_steps=2), progress=False)
    with pytest.raises(InputError, match="between 0 and steps"):
        long_decay = settings(tmp_path / "b", lr_schedule="constant", lr_decay_steps=7)  # steps=6
        run_loop(ToyTask(), long_decay, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
