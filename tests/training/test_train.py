"""Training loop: run folder contents, exact resume, crash safety under SIGKILL, overfitting."""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.training.conftest import tiny_cfg
from voicetrain.config import from_dict
from voicetrain.run_config import RunConfig
from voicetrain.inference.checkpoint import find_checkpoint, load_checkpoint_safe, load_model
from voicetrain.training.train import train


def read_metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_folder_has_everything(tiny_run):
    for name in ("config.yaml", "symbols.json", "stats.json", "metrics.csv", "loss.png", "result.json",
                 "checkpoints/last.ckpt", "checkpoints/step=12.ckpt", "samples/alignment_latest.png"):
        assert (tiny_run / name).exists(), name
    assert list((tiny_run / "tb").glob("events.out.tfevents.*"))
    assert list((tiny_run / "samples").glob("step_*/*.wav"))
    rows = read_metrics(tiny_run)
    assert any(r.get("val/loss") for r in rows) and any(r.get("train/loss") for r in rows)
    # a checkpoint loads on its own, without pickle, and carries config, symbols and statistics
    loaded = load_model(find_checkpoint(tiny_run, "best"))
    assert loaded.voice.preset == "tiny" and len(loaded.symbols) > 10 and loaded.stats.mel_mean


def test_resume_continues_exactly(tmp_path, prepared_demo_dataset):
    """6 steps in one go == 3 steps, stop, resume to 6: same step, same weights, same losses."""
    a, b = tmp_path / "a", tmp_path / "b"
    train(prepared_demo_dataset, a, tiny_cfg(max_steps=6, checkpoint_every_steps=3, val_every_steps=3))
    train(prepared_demo_dataset, b, tiny_cfg(max_steps=3, checkpoint_every_steps=3, val_every_steps=3))
    rb = train(prepared_demo_dataset, b, tiny_cfg(max_steps=6, checkpoint_every_steps=3, val_every_steps=3))
    assert rb.steps == 6
    sa = load_checkpoint_safe(a / "checkpoints" / "last.ckpt")
    sb = load_checkpoint_safe(b / "checkpoints" / "last.ckpt")
    assert sa["global_step"] == sb["global_step"] == 6
    for key in ("state_dict", "current_model_state"):  # averaged and live weights both continue exactly
        for k, v in sa[key].items():
            assert torch.allclose(v, sb[key][k], atol=1e-6), (key, k)
    la = [r["train/loss"] for r in read_metrics(a) if r.get("train/loss")]
    lb = [r["train/loss"] for r in read_metrics(b) if r.get("train/loss")]
    assert [round(float(x), 5) for x in la] == [round(float(x), 5) for x in lb]


def test_resume_mid_epoch_after_the_first_epoch(tmp_path, prepared_demo_dataset):
    """Stopping inside epoch 1 (3 batches per epoch) and resuming gives the uninterrupted run's weights."""
    a, b = tmp_path / "a", tmp_path / "b"
    kw = dict(checkpoint_every_steps=4, val_every_steps=100)
    train(prepared_demo_dataset, a, tiny_cfg(max_steps=8, **kw))
    train(prepared_demo_dataset, b, tiny_cfg(max_steps=4, **kw))
    train(prepared_demo_dataset, b, tiny_cfg(max_steps=8, **kw))
    sa = load_checkpoint_safe(a / "checkpoints" / "last.ckpt")
    sb = load_checkpoint_safe(b / "checkpoints" / "last.ckpt")
    assert sa["global_step"] == sb["global_step"] == 8
    for k, v in sa["state_dict"].items():
        assert torch.allclose(v, sb["state_dict"][k], atol=1e-6), k


def test_each_epoch_sees_a_new_batch_order(prepared_demo_dataset):
    """Lightning's epoch hook reaches the bucket sampler, so epochs are not replays of epoch 0."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.text.symbols import SymbolTable
    from voicetrain.data.cache import FeatureStats
    from voicetrain.training.train import make_loaders

    ds = PreparedDataset.open(prepared_demo_dataset)
    cfg = tiny_cfg(batch_size=2)
    cfg = dataclasses.replace(cfg, speakers=list(ds.info.speakers or ["speaker"]))
    _, _, loader, _ = make_loaders(ds, cfg, SymbolTable.load(ds.symbols_path), FeatureStats.load(ds.stats_path), None)
    orders = []
    for epoch in range(3):
        _set_sampler_epoch(loader, epoch)
        orders.append([list(b.ids) for b in loader])
    assert orders[0] != orders[1] or orders[1] != orders[2]


TRAIN_SCRIPT = """
import sys
from tests.training.conftest import tiny_cfg
from voicetrain.training.train import train
train(sys.argv[1], sys.argv[2], tiny_cfg(max_steps=400, checkpoint_every_steps=4, val_every_steps=1000,
      sample_every_steps=100000, keep_last=2))
"""


def _last_step(run: Path) -> int:
    p = run / "checkpoints" / "last.ckpt"
    return int(load_checkpoint_safe(p)["global_step"]) if p.exists() else 0


def test_sigkill_always_resumes(tmp_path, prepared_demo_dataset):
    """Kill training at random moments; every checkpoint left behind loads and training resumes
    from the last one, losing at most one checkpoint interval."""
    run = tmp_path / "killed"
    rng = random.Random(0)
    # the checkout's root (for tests.) and its src/ (this checkout's voicetrain, not an installed one)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
    progress = []
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(prepared_demo_dataset), str(run)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        before = _last_step(run)
        # wait until this attempt has written a checkpoint beyond where it started, then kill at a random moment
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                if _last_step(run) > before:
                    break
            except ValueError:
                pass  # mid-rename read race is impossible with atomic writes; a real failure re-raises below
        time.sleep(rng.uniform(0.0, 1.5))
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpts = list((run / "checkpoints").glob("*.ckpt"))
        assert ckpts
        for c in ckpts:  # never a checkpoint that fails to load
            assert "state_dict" in load_checkpoint_safe(c)
        # every training row the last checkpoint covers is on disk (log_every_steps 1: one row per step)
        logged = {int(r["step"]) for r in read_metrics(run) if r.get("train/loss")}
        missing = set(range(1, _last_step(run) + 1)) - logged
        assert not missing, f"metrics.csv lost rows {sorted(missing)[:10]} that the checkpoint covers"
        progress.append(_last_step(run))
    assert progress == sorted(progress) and progress[-1] > progress[0]
    # a final clean resume continues from the last checkpoint (at most one interval of 4 steps lost)
    resumed_from = _last_step(run)
    result = train(prepared_demo_dataset, run, tiny_cfg(max_steps=resumed_from + 4, checkpoint_every_steps=4,
                                                        val_every_steps=1000, sample_every_steps=100000))
    assert result.steps == resumed_from + 4
    assert not list((run / "checkpoints").glob(".*.tmp")), "a killed save's temp file outlived the restart"
    rows = [int(r["step"]) for r in read_metrics(run)]
    assert rows == sorted(rows), "metrics.csv has rows from a lost interval"


def test_overfit_four_real_utterances(tmp_path, prepared_demo_dataset):
    """`--overfit 4` on real data: the mel loss falls at least 5x."""
    import dataclasses

    from voicetrain.run_config import OptimConfig

    run = tmp_path / "overfit"
    cfg = tiny_cfg(overfit=4, max_steps=300, val_every_steps=300, checkpoint_every_steps=300,
                   sample_every_steps=100000, log_every_steps=10)
    cfg = dataclasses.replace(cfg, model_config={"hidden": 64, "ff_dim": 128, "predictor_filters": 64, "decoder_layers": 2},
                              optim=OptimConfig(lr=3e-3, warmup_steps=20, decay="constant"))
    train(prepared_demo_dataset, run, cfg)
    mel = [float(r["train/mel"]) for r in read_metrics(run) if r.get("train/mel")]
    assert mel[-1] < mel[0] / 5, (mel[0], mel[-1])


def test_ema_decay_ramps_up_to_its_cap():
    from voicetrain.training.callbacks import ema_decay_at

    assert ema_decay_at(0, 0.999) == 0.1
    assert 0.94 < ema_decay_at(150, 0.999) < 0.95
    assert ema_decay_at(100_000, 0.999) == 0.999


def test_ema_refuses_to_run_before_a_callback_that_needs_the_average(tmp_path):
    """SampleWriter synthesizes in on_validation_end; listed after EMAWeights it would hear the live weights."""
    from types import SimpleNamespace

    import lightning as L
    import pytest

    from voicetrain.training.callbacks import EMAWeights, SampleWriter

    ema, writer = EMAWeights(0.999), SampleWriter(tmp_path, 10, [], None)
    module = L.LightningModule()
    module.layer = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="EMAWeights must come after SampleWriter"):
        ema.setup(SimpleNamespace(callbacks=[ema, writer]), module, "fit")
    ema.setup(SimpleNamespace(callbacks=[writer, ema]), module, "fit")  # the right order sets up
    assert ema._average_model is not None


def test_validation_and_checkpoints_use_the_averaged_weights(tmp_path, prepared_demo_dataset):
    """The logged val loss is the averaged weights' loss; the checkpoint holds them as its weights
    and the live weights beside them (they differ after training)."""
    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.training.lit_module import TTSLightningModule
    from voicetrain.training.train import make_loaders

    run = tmp_path / "ema"
    train(prepared_demo_dataset, run, tiny_cfg(max_steps=6, val_every_steps=6, checkpoint_every_steps=6))
    ck = load_checkpoint_safe(run / "checkpoints" / "last.ckpt")
    assert set(ck["state_dict"]) == set(ck["current_model_state"])
    assert any(not torch.equal(v, ck["current_model_state"][k]) for k, v in ck["state_dict"].items())

    loaded = load_model(run / "checkpoints" / "last.ckpt")
    run_cfg = from_dict(RunConfig, loaded.run_config)
    *_, val_loader = make_loaders(PreparedDataset.open(prepared_demo_dataset), run_cfg, loaded.symbols, loaded.stats)

    def val_loss(state) -> float:
        loaded.model.load_state_dict(state)
        lit = TTSLightningModule(loaded.model.eval(), run_cfg, loaded.symbols, loaded.stats)
        total = count = 0.0
        with torch.no_grad():
            for batch in val_loader:
                total += float(lit.forward_losses(batch)[1]["loss"]) * len(batch)
                count += len(batch)
        return total / count

    logged = float(next(r["val/loss"] for r in read_metrics(run) if r.get("val/loss")))
    live = {k.removeprefix("model."): v for k, v in ck["current_model_state"].items()}
    assert abs(val_loss(loaded.model.state_dict()) - logged) < 1e-4
    assert abs(val_loss(live) - logged) > 1e-4


def test_restart_cleans_killed_saves_and_resumes_from_the_newest_intact_checkpoint(tmp_path):
    """A kill during last.ckpt's write leaves its temp file and an older last.ckpt beside a newer step=N.ckpt."""
    import torch

    from voicetrain.training.checkpoint_io import newest_resumable, remove_stale_temp_files

    d = tmp_path / "checkpoints"
    d.mkdir()
    full = {"optimizer_states": [{}]}  # what a resume needs besides the weights (checkpoint_io.TRAINING_STATE)
    torch.save({"global_step": 8, **full}, d / "last.ckpt")
    torch.save({"global_step": 8, **full}, d / "step=8.ckpt")
    torch.save({"global_step": 12, **full}, d / "step=12.ckpt")
    torch.save({"global_step": 16}, d / "step=16.ckpt")  # lean (weights only): newer, but it cannot resume
    (d / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")
    assert newest_resumable(d) == d / "step=12.ckpt"
    assert [p.name for p in remove_stale_temp_files(d)] == [".last.ckpt.abc123.tmp"]
    assert not list(d.glob(".*.tmp"))
    torch.save({"global_step": 12, **full}, d / "last.ckpt")
    assert newest_resumable(d) == d / "last.ckpt"


def test_only_last_ckpt_carries_the_training_state(tmp_path, prepared_demo_dataset):
    """step=N, best and the time snapshots hold the averaged weights only (a fraction of last.ckpt), and synthesize
    exactly as last.ckpt's averaged weights do; last.ckpt alone holds optimizer, scheduler and live weights."""
    from voicetrain.training.checkpoint_io import TRAINING_STATE

    run = tmp_path / "lean"
    train(prepared_demo_dataset, run, tiny_cfg(max_steps=4, checkpoint_every_steps=4, val_every_steps=4))
    ck = run / "checkpoints"
    last = load_checkpoint_safe(ck / "last.ckpt")
    assert all(k in last for k in ("optimizer_states", "lr_schedulers", "current_model_state"))
    lean = [p for p in ck.glob("*.ckpt") if p.name != "last.ckpt"]
    assert {p.name.split("=")[0] for p in lean} >= {"step", "best-step"}
    for p in lean:
        c = load_checkpoint_safe(p)
        assert not set(TRAINING_STATE) & set(c), p.name
        assert c["voicetrain"] == last["voicetrain"] and c["global_step"] == last["global_step"] == 4
        assert c["state_dict"].keys() == last["state_dict"].keys()
        assert all(torch.equal(v, last["state_dict"][k]) for k, v in c["state_dict"].items())
        assert p.stat().st_size < 0.6 * (ck / "last.ckpt").stat().st_size
        assert load_model(p).model is not None  # synth, eval and finetune load it


def test_auto_threads_are_measured_once_and_kept_on_resume(tmp_path, prepared_demo_dataset):
    import io
    import json

    import torch
    from rich.console import Console

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to choose between")
    run = tmp_path / "auto"
    before = torch.get_num_threads()
    try:
        train(prepared_demo_dataset, run, tiny_cfg(threads=0, max_steps=4, sample_every_steps=100000))
        chosen = json.loads((run / "threads.json").read_text())["threads"]
        (run / "threads.json").write_text(json.dumps({"threads": 1 if chosen != 1 else 2}))  # as if measured so
        buf = io.StringIO()
        train(prepared_demo_dataset, run, tiny_cfg(threads=0, max_steps=8, sample_every_steps=100000),
              console=Console(file=buf, width=200))
    finally:
        torch.set_num_threads(before)
    out = buf.getvalue()
    assert f"threads: {1 if chosen != 1 else 2}, as measured when this run started" in out
    assert "->" not in out.split("threads:")[1].split("\n")[0]  # not measured again
