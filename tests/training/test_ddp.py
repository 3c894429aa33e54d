"""Two CPU processes (Lightning DDP, gloo) through `voicetrain train`, then a resume of the same run.

Before the batch samplers sharded themselves, every rank died with "float() argument must be ... not
'DistributedSampler'": Lightning had swapped the bucket sampler's sampler for its own.
A subprocess, because Lightning's 'ddp' launcher re-runs the command line for rank 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from voicetrain.inference.checkpoint import load_checkpoint_safe

VOICETRAIN = str(Path(sys.executable).parent / "voicetrain")


def _train(dataset: Path, run: Path, max_steps: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [VOICETRAIN, "train", str(dataset), "--out", str(run), "--preset", "tiny", "--max-steps", str(max_steps),
         "--devices", "2", "--set", "train.accelerator=cpu", "--threads", "1", "--batch-size", "4",
         "--quality-sentences", "0", "--set", "train.val_every_steps=2", "--set", "train.checkpoint_every_steps=2"],
        capture_output=True, text=True, timeout=240)


def test_two_process_ddp_trains_and_resumes(prepared_demo_dataset, tmp_path):
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

    second = _train(prepared_demo_dataset, run, 6)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    ck = load_checkpoint_safe(last)
    assert ck["global_step"] == 6
    assert json.loads((run / "result.json").read_text())["steps"] == 6


def test_two_process_ddp_trains_the_vocoder(prepared_demo_dataset, tmp_path):
    """The GAN under DDP: the segment sampler shards, and the discriminator step's unused generator
    parameters are allowed (without that, DDP stops every rank with 'parameters that were not used')."""
    run = tmp_path / "ddp_vocoder"
    r = subprocess.run(
        [VOICETRAIN, "train-vocoder", str(prepared_demo_dataset), "--out", str(run), "--preset", "tiny",
         "--max-steps", "4", "--batch-size", "4", "--threads", "1", "--gan-start", "0", "--devices", "2",
         "--set", "train.accelerator=cpu", "--set", "train.val_every_steps=2"],
        capture_output=True, text=True, timeout=240)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert load_checkpoint_safe(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert json.loads((run / "result.json").read_text())["steps"] == 4
