"""A tiny trained run shared by the training, synthesis and alignment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicetrain.run_config import RunConfig, TrainConfig


def tiny_cfg(**train) -> RunConfig:
    base = dict(batch_size=4, max_steps=12, val_every_steps=6, checkpoint_every_steps=6, sample_every_steps=6,
                log_every_steps=1, n_sample_sentences=1, threads=1)
    base.update(train)
    return RunConfig(preset="tiny", train=TrainConfig(**base))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, prepared_demo_dataset) -> Path:
    from voicetrain.training.train import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(prepared_demo_dataset, run, tiny_cfg())
    return run
