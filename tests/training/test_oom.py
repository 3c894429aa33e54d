"""Out-of-memory recovery (training/oom.py, train()): an injected torch.cuda.OutOfMemoryError at a chosen step
(the VOICETRAIN_FAULT_OOM_AT_STEP hook) halves the batch, doubles accumulation, and the run resumes to its
last step; at batch 1 it gives up with a clear error. The RAM warning before training."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from tests.training.conftest import tiny_cfg
from voicetrain.cli import app
from voicetrain.inference.checkpoint import load_checkpoint_safe
from voicetrain.run_config import TrainConfig
from voicetrain.training.loop import ResumePoint
from voicetrain.training.oom import FAULT_ENV, TrainingOutOfMemory, halved, is_out_of_memory
from voicetrain.training.train import train


def _train_section(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())["train"]


def test_an_injected_oom_halves_the_batch_and_the_run_finishes(tmp_path, prepared_demo_dataset, monkeypatch):
    """11 training utterances: 3 batches of 4 per epoch. Checkpoints at steps 2 and 4 (both mid-epoch), the fault
    at step 5: the run resumes from step 4 with batch 2 x accumulate 2 and stops at step 8, having trained
    4 batches of 4 and then 8 of 2 (the resumed epoch skips the 2 half-size batches step 4 had consumed)."""
    monkeypatch.setenv(FAULT_ENV, "5")
    run = tmp_path / "run"
    out = io.StringIO()
    r = train(prepared_demo_dataset, run, tiny_cfg(max_steps=8, checkpoint_every_steps=2, val_every_steps=100,
                                                   sample_every_steps=100), console=Console(file=out, width=400))
    log = out.getvalue()
    assert "out of memory at step 5" in log and "batch 4 -> 2, accumulate 1 -> 2 (the same effective batch)" in log
    assert "resuming from" in log.split("out of memory at step 5")[1]
    assert r.steps == 8 and r.stopped_because == "max_steps"
    t = _train_section(run)
    assert (t["batch_size"], t["accumulate"]) == (2, 2)  # saved: a resume keeps them
    events = [json.loads(line) for line in (run / "health.jsonl").read_text().splitlines()]
    oom = [e for e in events if e["kind"] == "out_of_memory"]
    assert len(oom) == 1 and oom[0]["step"] == 5 and (oom[0]["batch_size"], oom[0]["accumulate"]) == (2, 2)
    last = load_checkpoint_safe(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 8
    assert last["voicetrain_data"] == {"epoch": 2, "batches_done": 4, "batch_size": 2}
    progress = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
    assert progress["processed"] == 4 + 8  # 4 steps of one batch of 4, then 4 steps of two batches of 2
    assert FAULT_ENV not in __import__("os").environ  # the fault fired once

    # the CLI resumes with the halved settings when no flag says otherwise
    res = CliRunner().invoke(app, ["train", str(prepared_demo_dataset), "--out", str(run), "--preset", "tiny",
                                   "--max-steps", "9", "--threads", "1", "--quality-sentences", "0",
                                   "--set", "train.val_every_steps=100", "--set", "train.sample_every_steps=100"])
    assert res.exit_code == 0, res.output
    assert "resumed run keeps precision 32-true, batch_size 2, accumulate 2" in res.output.replace("\n", " ")
    assert (_train_section(run)["batch_size"], _train_section(run)["accumulate"]) == (2, 2)
    assert load_checkpoint_safe(run / "checkpoints" / "last.ckpt")["global_step"] == 9


def test_out_of_memory_at_batch_1_gives_up_clearly(tmp_path, prepared_demo_dataset, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "2:2")  # twice: at batch 2, then again at batch 1
    run = tmp_path / "run"
    with pytest.raises(TrainingOutOfMemory, match="out of memory at batch 1 .*smaller --preset"):
        train(prepared_demo_dataset, run, tiny_cfg(batch_size=2, max_steps=4, val_every_steps=100,
                                                   sample_every_steps=100), console=Console(file=io.StringIO()))
    t = _train_section(run)
    assert (t["batch_size"], t["accumulate"]) == (1, 2)

    monkeypatch.setenv(FAULT_ENV, "1")  # the CLI says it in one line, exit 1
    res = CliRunner().invoke(app, ["train", str(prepared_demo_dataset), "--out", str(tmp_path / "cli"), "--preset",
                                   "tiny", "--batch-size", "1", "--max-steps", "3", "--threads", "1",
                                   "--quality-sentences", "0"])
    assert res.exit_code == 1 and "out of memory at batch 1" in res.output


def test_train_vocoder_says_what_to_do(tmp_path, prepared_demo_dataset, monkeypatch):
    """The GAN has no gradient accumulation: no automatic fallback, one clear line with the halved batch."""
    monkeypatch.setenv(FAULT_ENV, "1")
    res = CliRunner().invoke(app, ["train-vocoder", str(prepared_demo_dataset), "--out", str(tmp_path / "voc"),
                                   "--preset", "tiny", "--max-steps", "3", "--batch-size", "4", "--threads", "1"])
    assert res.exit_code == 1, res.output
    assert "out of memory at step 1" in res.output and "--batch-size 2" in res.output


def test_what_counts_as_out_of_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 8589934592 bytes."))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB)"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(MemoryError())  # Python's own: not a tensor allocation, not retried


def test_halving_keeps_the_effective_batch():
    t = halved(TrainConfig(batch_size=16, accumulate=1), RuntimeError("x"))
    assert (t.batch_size, t.accumulate) == (8, 2)
    t = halved(TrainConfig(batch_size=5, accumulate=2), RuntimeError("x"))
    assert (t.batch_size, t.accumulate) == (2, 4)  # odd: 10 -> 8, the message says so
    with pytest.raises(TrainingOutOfMemory):
        halved(TrainConfig(batch_size=1, accumulate=8), RuntimeError("x"))


def test_a_resume_at_another_batch_size_skips_the_same_share_of_the_epoch():
    rp = ResumePoint("x.ckpt", 4, (1, 3), batch_size=8)
    assert rp.skip_for(8) == (1, 3) and rp.skip_for(4) == (1, 6) and rp.skip_for(2) == (1, 12)
    assert ResumePoint("x.ckpt", 4, (1, 3)).skip_for(4) == (1, 3)  # a checkpoint from before batch_size was kept


def test_ram_warning_before_training(tmp_path, prepared_demo_dataset, monkeypatch):
    from voicetrain import hardware

    monkeypatch.setattr(hardware, "meminfo", lambda path="/proc/meminfo": {"total_gb": 1.0, "available_gb": 0.01})
    out = io.StringIO()
    train(prepared_demo_dataset, tmp_path / "run", tiny_cfg(), dry_run=True, console=Console(file=out, width=400))
    log = out.getvalue()
    assert "memory:" in log and "10 MB is available" in log and "--batch-size" in log
