"""Two CPU processes (Lightning DDP, gloo): `voicetrain train`, `voicetrain train-vocoder`, and an exact mid-epoch resume.

Before the batch samplers sharded themselves, every rank died with "float() argument must be ... not
'DistributedSampler'": Lightning had swapped the bucket sampler's sampler for its own.
A subprocess, because Lightning's 'ddp' launcher re-runs the command line for rank 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from voicetrain.inference.checkpoint import load_checkpoint_safe

VOICETRAIN = str(Path(sys.executable).parent / "voicetrain")


def _run(cmd: list[str], timeout: float = 150, **kw) -> subprocess.CompletedProcess:
    """``cmd`` in its own process group, all of it (rank 1 included) killed if it outlives ``timeout``: a rank
    stuck in a collective must fail the test, not hang it."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"{cmd[:3]} hung for {timeout} s:\n{(out + err)[-4000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _train(dataset: Path, run: Path, max_steps: int) -> subprocess.CompletedProcess:
    return _run(
        [VOICETRAIN, "train", str(dataset), "--out", str(run), "--preset", "tiny", "--max-steps", str(max_steps),
         "--devices", "2", "--set", "train.accelerator=cpu", "--threads", "1", "--batch-size", "4",
         "--quality-sentences", "0", "--set", "train.val_every_steps=2", "--set", "train.checkpoint_every_steps=2"])


def test_two_process_ddp_trains(prepared_demo_dataset, tmp_path):
    run = tmp_path / "ddp_run"
    first = _train(prepared_demo_dataset, run, 4)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log  # two processes really trained
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint_safe(last)["global_step"] == 4
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 4 and result["stopped_because"] == "max_steps"
    rows = (run / "metrics.csv").read_text().splitlines()
    steps = [r.split(",")[0] for r in rows[1:]]
    assert steps == sorted(set(steps), key=int)  # rank 0 alone wrote it: no row twice


# Trains through voicetrain.training.train.train in 2 processes and saves each rank's weights after fit
# (only rank 0 writes checkpoints, so this is how rank 1's weights are seen). Lightning re-runs this script
# for rank 1.
SCRIPT = """
import dataclasses
import sys
import torch
import voicetrain.training.train as T
from tests.conftest import tiny_cfg

fit = T.fit

def fit_and_save(*args, **kw):
    trainer, wall = fit(*args, **kw)
    m = trainer.lightning_module
    torch.save({k: v.detach().clone() for k, v in m.model.state_dict().items()}, f"{sys.argv[2]}/rank{trainer.global_rank}.pt")
    return trainer, wall

T.fit = fit_and_save
cfg = tiny_cfg(max_steps=int(sys.argv[3]), batch_size=2, devices="2", accelerator="cpu", checkpoint_every_steps=1,
               val_every_steps=100, sample_every_steps=100)
# dropout from the first step: the resume must restore every rank's own RNG state
cfg = dataclasses.replace(cfg, model_config={"dropout": 0.1, "predictor_dropout": 0.5, "dropout_ramp_steps": [0, 0]})
T.train(sys.argv[1], sys.argv[2], cfg)
"""


def test_ddp_resume_mid_epoch_is_exact_on_every_rank(prepared_demo_dataset, tmp_path):
    """3 steps in one go == 1 step, stop, resume to 3 (batch 2: 2 batches per rank and epoch, so the stop is
    mid-epoch): every rank ends with the same weights, and the same as the uninterrupted run's."""
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[2]

    def run(out: Path, steps: int) -> None:
        r = _run([sys.executable, str(script), str(prepared_demo_dataset), str(out), str(steps)], cwd=root,
                 env={**os.environ, "PYTHONPATH": str(root)})
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]

    a, b = tmp_path / "a", tmp_path / "b"
    run(a, 3)
    run(b, 1)
    assert load_checkpoint_safe(b / "checkpoints" / "last.ckpt")["voicetrain_data"]["batches_done"] == 1
    run(b, 3)
    wa = [torch.load(a / f"rank{r}.pt") for r in (0, 1)]
    wb = [torch.load(b / f"rank{r}.pt") for r in (0, 1)]
    for k, v in wa[0].items():
        assert torch.equal(v, wa[1][k]), k  # DDP keeps the ranks in step
        assert torch.equal(wb[0][k], wb[1][k]), k
        assert torch.allclose(v, wb[0][k], atol=1e-6), k  # the resumed run continues exactly


def test_two_process_ddp_trains_the_vocoder(prepared_demo_dataset, tmp_path):
    """The GAN under DDP: the segment sampler shards, and the discriminator step's unused generator
    parameters are allowed (without that, DDP stops every rank with 'parameters that were not used')."""
    run = tmp_path / "ddp_vocoder"
    r = _run(
        [VOICETRAIN, "train-vocoder", str(prepared_demo_dataset), "--out", str(run), "--preset", "tiny",
         "--max-steps", "4", "--batch-size", "4", "--threads", "1", "--gan-start", "0", "--devices", "2",
         "--set", "train.accelerator=cpu", "--set", "train.val_every_steps=2"])
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert load_checkpoint_safe(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert json.loads((run / "result.json").read_text())["steps"] == 4


VOCODER_SCRIPT = """
import sys
import torch
import voicetrain.training.train_vocoder as TV
from voicetrain.vocoder_config import VocoderLossConfig, VocoderRunConfig, VocoderTrainConfig

fit = TV.fit

def fit_and_save(*args, **kw):
    trainer, wall = fit(*args, **kw)
    m = trainer.lightning_module
    torch.save({k: v.detach().clone() for k, v in m.state_dict().items()}, f"{sys.argv[2]}/rank{trainer.global_rank}.pt")
    return trainer, wall

TV.fit = fit_and_save
train = VocoderTrainConfig(max_steps=int(sys.argv[3]), batch_size=2, devices="2", accelerator="cpu", threads=1,
                           checkpoint_every_steps=1, val_every_steps=100, sample_every_steps=100, log_every_steps=1)
# the GAN from step 0: generator and discriminator steps, both optimizers' states, resumed on every rank
cfg = VocoderRunConfig(preset="tiny", train=train, loss=VocoderLossConfig(gan_start_step=0))
TV.train_vocoder(sys.argv[1], sys.argv[2], cfg)
"""


def test_vocoder_ddp_resume_mid_epoch_is_exact_on_every_rank(prepared_demo_dataset, tmp_path):
    """train-vocoder under 2-process DDP: 3 steps in one go == 1 step, stop, resume to 3 (11 utterances in
    batches of 2: 5 batches per epoch, 2 per rank, so the stop is mid-epoch); both ranks hold the same
    generator and discriminators, and the same as the uninterrupted run's."""
    script = tmp_path / "ddp_vocoder.py"
    script.write_text(VOCODER_SCRIPT)
    root = Path(__file__).resolve().parents[2]

    def run(out: Path, steps: int) -> str:
        r = _run([sys.executable, str(script), str(prepared_demo_dataset), str(out), str(steps)], cwd=root,
                 env={**os.environ, "PYTHONPATH": str(root)})
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        return r.stdout + r.stderr

    a, b = tmp_path / "a", tmp_path / "b"
    run(a, 3)
    run(b, 1)
    assert load_checkpoint_safe(b / "checkpoints" / "last.ckpt")["voicetrain_data"]["batches_done"] == 1
    assert "resuming from" in run(b, 3)
    assert load_checkpoint_safe(b / "checkpoints" / "last.ckpt")["global_step"] == 3
    wa = [torch.load(a / f"rank{r}.pt") for r in (0, 1)]
    wb = [torch.load(b / f"rank{r}.pt") for r in (0, 1)]
    assert any(k.startswith("mpd.") for k in wa[0]) and any(k.startswith("generator.") for k in wa[0])
    for k, v in wa[0].items():
        assert torch.equal(v, wa[1][k]), k  # DDP keeps the ranks in step
        assert torch.equal(wb[0][k], wb[1][k]), k
        assert torch.allclose(v, wb[0][k], atol=1e-6), k  # the resumed run continues exactly
