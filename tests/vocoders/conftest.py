"""A tiny vocoder run shared by the vocoder tests (read-only: copy it before changing it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicetrain.vocoder_config import VocoderLossConfig, VocoderRunConfig, VocoderTrainConfig


def tiny_vocoder_cfg(**train) -> VocoderRunConfig:
    base = dict(batch_size=4, max_steps=3, val_every_steps=3, checkpoint_every_steps=3, sample_every_steps=3,
                log_every_steps=1, n_val_utterances=1, val_max_frames=64, threads=1)
    base.update(train)
    # the GAN from the first step: the tests exercise every loss term
    return VocoderRunConfig(preset="tiny", train=VocoderTrainConfig(**base), loss=VocoderLossConfig(gan_start_step=0))


@pytest.fixture(scope="session")
def tiny_vocoder_run(tmp_path_factory, prepared_demo_dataset) -> Path:
    from voicetrain.training.train_vocoder import train_vocoder

    run = tmp_path_factory.mktemp("vocoder_runs") / "tiny_vocoder"
    train_vocoder(prepared_demo_dataset, run, tiny_vocoder_cfg())
    return run
