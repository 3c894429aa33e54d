"""Fine-tuning: frozen weights stay bit-identical, old speakers unchanged, incompatible bases refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from voicetrain.config import ConfigError
from voicetrain.inference.checkpoint import find_checkpoint, load_checkpoint_safe, load_model
from voicetrain.run_config import FinetuneConfig, TrainConfig
from voicetrain.training.finetune import IncompatibleBaseError, finetune

FT = dict(speaker_init="mean")
LOOP = TrainConfig(max_steps=4, val_every_steps=2, checkpoint_every_steps=2, sample_every_steps=10, batch_size=4,
                   threads=1, early_stopping_patience=0, quality_sentences=0)


def _state(path):
    return {k: v for k, v in load_checkpoint_safe(path)["state_dict"].items()}


@pytest.fixture(scope="module")
def speaker_ft(tmp_path_factory, tiny_run, prepared_demo_dataset):
    run = tmp_path_factory.mktemp("ft") / "spk"
    result = finetune(prepared_demo_dataset, tiny_run, run,
                      FinetuneConfig(strategy="speaker-embedding", speaker_name="newvoice", **FT), LOOP)
    return run, result


def test_speaker_embedding_strategy_trains_only_the_new_row(speaker_ft, tiny_run):
    run, result = speaker_ft
    base = _state(find_checkpoint(tiny_run, "best"))
    tuned = _state(run / "checkpoints" / "last.ckpt")
    for k, v in base.items():
        if k == "model.speaker_embedding.weight":
            assert torch.equal(tuned[k][: v.shape[0]], v), "existing speakers' rows changed"
            assert tuned[k].shape[0] == v.shape[0] + 1
            init = v.mean(0)
            assert not torch.equal(tuned[k][-1], init), "the new speaker's row did not train"
        else:
            assert torch.equal(tuned[k], v), f"frozen parameter changed: {k}"
    dim = base["model.speaker_embedding.weight"].shape[1]
    assert result.extra["trainable_parameters"] == {"speaker_embedding": dim}
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["finetune"]["strategy"] == "speaker-embedding" and cfg["speakers"][-1] == "newvoice"
    assert "encoder" in cfg["finetune"]["frozen"] and cfg["finetune"]["init_from"]
    assert cfg["train"]["max_steps"] == 4 and "max_steps" not in cfg["finetune"]  # the loop lives in train


def test_existing_speakers_sound_the_same(speaker_ft, tiny_run):
    run, _ = speaker_ft
    base = load_model(find_checkpoint(tiny_run, "best")).model
    tuned = load_model(run / "checkpoints" / "last.ckpt").model
    tokens = torch.randint(1, 20, (1, 15))
    a, la = base.infer(tokens, torch.tensor([0]))
    b, lb = tuned.infer(tokens, torch.tensor([0]))
    assert torch.equal(la, lb) and torch.equal(a, b)


def test_freeze_encoder_keeps_encoder_bit_identical(tmp_path, tiny_run, prepared_demo_dataset):
    run = tmp_path / "fe"
    finetune(prepared_demo_dataset, tiny_run, run, FinetuneConfig(strategy="freeze-encoder", **FT), LOOP)
    base = _state(find_checkpoint(tiny_run, "best"))
    tuned = _state(run / "checkpoints" / "last.ckpt")
    frozen = [k for k in base if k.startswith(("model.encoder.", "model.embedding."))]
    assert frozen and all(torch.equal(base[k], tuned[k]) for k in frozen)
    assert not torch.equal(base["model.mel_out.weight"], tuned["model.mel_out.weight"])


def test_bitfit_trains_only_biases_norms_and_the_new_row(tmp_path, tiny_run, prepared_demo_dataset):
    run = tmp_path / "bf"
    result = finetune(prepared_demo_dataset, tiny_run, run, FinetuneConfig(strategy="bitfit", speaker_name="newvoice", **FT), LOOP)
    base = _state(find_checkpoint(tiny_run, "best"))
    tuned = _state(run / "checkpoints" / "last.ckpt")
    model = load_model(run / "checkpoints" / "last.ckpt").model
    norms = {n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert norms, "the tiny model has no LayerNorm to test"
    moved = set()
    for k, v in base.items():
        name = k.removeprefix("model.")
        if name == "speaker_embedding.weight":
            assert torch.equal(tuned[k][: v.shape[0]], v), "existing speakers' rows changed"
            assert not torch.equal(tuned[k][-1], v.mean(0)), "the new speaker's row did not train"
        elif name.endswith(".bias") or name.rsplit(".", 1)[0] in norms:
            if not torch.equal(tuned[k], v):
                moved.add(name)
        else:
            assert torch.equal(tuned[k], v), f"a weight outside bitfit changed: {k}"
    assert any(n.endswith(".bias") for n in moved) and any(n.rsplit(".", 1)[0] in norms for n in moved)
    trained = result.extra["trainable_parameters"]
    dim = base["model.speaker_embedding.weight"].shape[1]
    assert trained["speaker_embedding"] == dim and sum(trained.values()) < 0.1 * sum(v.numel() for v in base.values())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["finetune"]["strategy"] == "bitfit" and cfg["finetune"]["frozen"] == []


def test_incompatible_sample_rate_is_refused(tmp_path, tiny_run, prepared_demo_dataset):
    ds = tmp_path / "ds16k"
    shutil.copytree(prepared_demo_dataset, ds)
    info = yaml.safe_load((ds / "dataset.yaml").read_text())
    info["audio"]["sample_rate"] = 16000
    (ds / "dataset.yaml").write_text(yaml.safe_dump(info))
    with pytest.raises(IncompatibleBaseError, match=r"audio.sample_rate: base 22050 vs dataset 16000"):
        finetune(ds, tiny_run, tmp_path / "r", FinetuneConfig(**FT), LOOP)


def test_unseen_symbols_are_named(tmp_path, tiny_run, prepared_demo_dataset):
    ds = tmp_path / "dsnew"
    shutil.copytree(prepared_demo_dataset, ds)
    lines = (ds / "train.jsonl").read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[0])
    row["phonemes"] += " ʀǂ"
    lines[0] = json.dumps(row, ensure_ascii=False)
    (ds / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(IncompatibleBaseError, match="never saw: .*'ʀ'.*'ǂ'"):
        finetune(ds, tiny_run, tmp_path / "r", FinetuneConfig(**FT, max_new_symbols=1), LOOP)
    # within the allowance the new symbols become new rows of the phoneme table; old ids stay put
    finetune(ds, tiny_run, tmp_path / "r2", FinetuneConfig(**FT), LOOP)
    base_syms = json.loads((tiny_run / "symbols.json").read_text())["symbols"]
    syms = json.loads((tmp_path / "r2" / "symbols.json").read_text())["symbols"]
    assert syms == base_syms + ["ǂ", "ʀ"]
    emb = _state(tmp_path / "r2" / "checkpoints" / "last.ckpt")["model.embedding.weight"]
    assert emb.shape[0] == len(syms)


def test_new_phoneme_rows_learn_where_the_table_is_frozen(tmp_path, tiny_run, prepared_demo_dataset):
    """bitfit and speaker-embedding freeze the phoneme table; the rows a dataset adds must still learn."""
    ds = tmp_path / "dsnew"
    shutil.copytree(prepared_demo_dataset, ds)
    rows = [json.loads(ln) for ln in (ds / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:
        row["phonemes"] += " ʀ"
    (ds / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    base = _state(find_checkpoint(tiny_run, "best"))["model.embedding.weight"]
    for strategy in ("bitfit", "speaker-embedding"):
        result = finetune(ds, tiny_run, tmp_path / strategy, FinetuneConfig(strategy=strategy, speaker_name="nv", **FT),
                          LOOP)
        emb = _state(tmp_path / strategy / "checkpoints" / "last.ckpt")["model.embedding.weight"]
        assert emb.shape[0] == base.shape[0] + 1
        assert torch.equal(emb[: base.shape[0]], base), f"{strategy}: a row the base knew changed"
        assert not torch.equal(emb[-1], base[1:].mean(0)), f"{strategy}: the new symbol's row did not learn"
        assert result.extra["trainable_parameters"]["embedding"] == base.shape[1]


def test_unknown_strategy_and_module(tmp_path, tiny_run, prepared_demo_dataset):
    with pytest.raises(ConfigError, match="finetune.strategy: 'magic' is out of range; expected one of speaker-embedding"):
        FinetuneConfig(strategy="magic", **FT)
    with pytest.raises(ConfigError, match="no such module or group"):
        finetune(prepared_demo_dataset, tiny_run, tmp_path / "r2", FinetuneConfig(strategy="full", freeze=["brain"], **FT), LOOP)
