"""Shared session fixtures: a tiny synthetic corpus, and that corpus prepared once per session.

``prepared_demo_dataset`` is the dataset the training, synthesis and evaluation
tests build on; treat it as read-only (copy it with ``shutil.copytree`` before
tampering with it). ``tiny_run`` is a tiny FastSpeech 2 run trained on it, shared by
the training, synthesis, registry, export and serving tests (read-only too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from voicetrain.run_config import RunConfig, TrainConfig

DEMO_UTTERANCES = 12


@pytest.fixture(scope="session")
def demo_corpus_dir(tmp_path_factory) -> Path:
    """An LJSpeech-layout corpus of 12 ARCTIC prompts spoken by flite rms (16 kHz wavs + metadata.csv)."""
    from voicetrain.data.demo import make_demo_corpus

    out = tmp_path_factory.mktemp("demo_corpus") / "rms"
    make_demo_corpus(out, ["flite:rms"], utterances=DEMO_UTTERANCES, seed=0)
    return out


@pytest.fixture(scope="session")
def prepared_demo_dataset(tmp_path_factory, demo_corpus_dir) -> Path:
    """``demo_corpus_dir`` prepared with default settings (22.05 kHz, espeak phonemes, 10% val)."""
    from voicetrain.data.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("prepared") / "demo_dataset"
    result = prepare(PrepareConfig(input=str(demo_corpus_dir), out=str(out)))
    assert result.n_kept == DEMO_UTTERANCES, result
    return out


def tiny_cfg(**train) -> RunConfig:
    """A tiny run; quality tracking off unless asked for (tests/training/test_quality.py covers it)."""
    base = dict(batch_size=4, max_steps=12, val_every_steps=6, checkpoint_every_steps=6, sample_every_steps=6,
                log_every_steps=1, n_sample_sentences=1, threads=1, quality_sentences=0)
    base.update(train)
    return RunConfig(preset="tiny", train=TrainConfig(**base))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, prepared_demo_dataset) -> Path:
    from voicetrain.training.train import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(prepared_demo_dataset, run, tiny_cfg())
    return run
