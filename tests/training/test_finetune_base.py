"""Fine-tuning from a multi-speaker base: the new speaker starts from the nearest base speaker's row.

A two-speaker tiny base (flite awb + flite kal16); the new voice is awb speaking other prompts, so
the speaker encoder must pick awb's row, and ``mean`` must start from the mean of both rows.
"""

from __future__ import annotations

import json

import pytest
import torch

from voicetrain.run_config import FinetuneConfig, TrainConfig
from voicetrain.training.finetune import finetune, load_base

FT = dict(speaker_name="newvoice")
LOOP = TrainConfig(max_steps=2, val_every_steps=2, checkpoint_every_steps=2, sample_every_steps=10, batch_size=4,
                   threads=1, early_stopping_patience=0, quality_sentences=0)


def _prepared(root, voices, utterances, seed):
    from voicetrain.data.demo import make_demo_corpus
    from voicetrain.data.prepare import PrepareConfig, prepare

    make_demo_corpus(root / "corpus", voices, utterances=utterances, seed=seed)
    prepare(PrepareConfig(input=str(root / "corpus"), out=str(root / "ds")))
    return root / "ds"


@pytest.fixture(scope="module")
def two_speaker_base(tmp_path_factory):
    from tests.conftest import tiny_cfg
    from voicetrain.training.train import train

    root = tmp_path_factory.mktemp("base2")
    ds = _prepared(root, ["flite:awb,flite:kal16"], 8, 0)
    train(ds, root / "run", tiny_cfg(max_steps=2, val_every_steps=2, checkpoint_every_steps=2, sample_every_steps=2))
    return root / "run"


@pytest.fixture(scope="module")
def awb_dataset(tmp_path_factory):
    return _prepared(tmp_path_factory.mktemp("awb"), ["flite:awb"], 6, 7)


def test_nearest_speaker_init_picks_the_same_voice(tmp_path, two_speaker_base, awb_dataset):
    base = load_base(two_speaker_base)
    assert base.voice.speakers == ["flite_awb", "flite_kal16"]
    result = finetune(awb_dataset, two_speaker_base, tmp_path / "ft", FinetuneConfig(strategy="speaker-embedding", **FT), LOOP)
    init = json.loads((tmp_path / "ft" / "speaker_init.json").read_text())
    assert init["method"] == "nearest" and len(init["speakers"]) == 1
    (picked,) = init["speakers"].values()
    assert picked["nearest"] == "flite_awb", init
    assert picked["similarity"] > 0.8
    assert result.extra["speaker_init"] == init
    # the new row started as awb's row: with only that row training for 2 steps at lr 1e-2 it stays close
    emb = torch.load(tmp_path / "ft" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"][
        "model.speaker_embedding.weight"]
    awb, kal = base.state["speaker_embedding.weight"]
    assert (emb[2] - awb).norm() < (emb[2] - kal).norm()


def test_mean_speaker_init_starts_from_the_mean_row(tmp_path, two_speaker_base, awb_dataset):
    finetune(awb_dataset, two_speaker_base, tmp_path / "ft",
             FinetuneConfig(strategy="speaker-embedding", speaker_init="mean", **FT), LOOP)
    init = json.loads((tmp_path / "ft" / "speaker_init.json").read_text())
    assert init == {"method": "mean", "speakers": {}}
    emb = torch.load(tmp_path / "ft" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"][
        "model.speaker_embedding.weight"]
    rows = load_base(two_speaker_base).state["speaker_embedding.weight"]
    assert (emb[2] - rows.mean(0)).norm() < (emb[2] - rows[0]).norm()


def test_unknown_speaker_init_is_refused(tmp_path, two_speaker_base, awb_dataset):
    from voicetrain.config import ConfigError

    with pytest.raises(ConfigError, match="finetune.speaker_init: 'closest' is out of range; expected one of nearest, mean"):
        FinetuneConfig(speaker_init="closest", **FT)
