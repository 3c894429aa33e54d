"""train-vocoder: the CLI writes a loadable checkpoint; --on-generated and --from; the run folder."""

from __future__ import annotations

import numpy as np
import torch
from typer.testing import CliRunner

from voicetrain.cli import app
from voicetrain.config import load_yaml
from voicetrain.data.cache import cache_path
from voicetrain.data.manifest import PreparedDataset
from voicetrain.inference.checkpoint import load_checkpoint_safe
from voicetrain.inference.vocoder import load_vocoder, load_vocoder_checkpoint
from voicetrain.vocoder_config import VocoderRunConfig
from voicetrain.vocoders import Vocos

runner = CliRunner()
TINY = ["--preset", "tiny", "--batch-size", "4", "--threads", "1", "--gan-start", "0"]


def test_cli_trains_three_steps_and_writes_a_loadable_checkpoint(tmp_path, prepared_demo_dataset):
    run = tmp_path / "voc"
    r = runner.invoke(app, ["train-vocoder", str(prepared_demo_dataset), "--out", str(run), "--max-steps", "3", *TINY])
    assert r.exit_code == 0, r.output
    assert "3 steps" in r.output
    for name in ("config.yaml", "metrics.csv", "loss.png", "result.json", "checkpoints/last.ckpt"):
        assert (run / name).exists(), name
    cfg = load_yaml(VocoderRunConfig, run / "config.yaml")
    assert cfg.preset == "tiny" and cfg.train.max_steps == 3 and cfg.dataset == str(prepared_demo_dataset.resolve())
    ckpt = load_checkpoint_safe(run / "checkpoints" / "last.ckpt")  # weights_only: no pickle
    assert ckpt["global_step"] == 3 and ckpt["voicetrain"]["kind"] == "vocoder"
    loaded = load_vocoder_checkpoint(run)
    assert isinstance(loaded.vocoder, Vocos) and loaded.step == 3 and not loaded.vocoder.training
    vocoder = load_vocoder(run, PreparedDataset.open(prepared_demo_dataset).info.audio)
    with torch.inference_mode():
        wav = vocoder(torch.full((1, 80, 20), -5.0))
    assert wav.shape == (1, 20 * 256) and torch.isfinite(wav).all()
    assert list((run / "samples" / "real").glob("*.wav")) and list((run / "samples").glob("step_*/*.wav"))


def test_resume_mid_epoch_is_exact(tmp_path, prepared_demo_dataset):
    """4 steps in one go == 3 steps (mid-epoch: 2 batches per epoch here), stop, resume to 4: same weights,
    generator and discriminators (the sampler skips consumed batches; segment offsets are a pure function)."""
    from tests.vocoders.conftest import tiny_vocoder_cfg
    from voicetrain.training.train_vocoder import train_vocoder

    a, b = tmp_path / "a", tmp_path / "b"
    cfg = lambda n: tiny_vocoder_cfg(max_steps=n, val_every_steps=100, checkpoint_every_steps=100,  # noqa: E731
                                     sample_every_steps=100)
    train_vocoder(prepared_demo_dataset, a, cfg(4))
    train_vocoder(prepared_demo_dataset, b, cfg(3))
    r = train_vocoder(prepared_demo_dataset, b, cfg(4))
    assert r.steps == 4
    ca = load_checkpoint_safe(a / "checkpoints" / "last.ckpt")
    cb = load_checkpoint_safe(b / "checkpoints" / "last.ckpt")
    for key in ("state_dict", "current_model_state"):  # the averaged weights and the live ones
        sa, sb = ca[key], cb[key]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.allclose(sa[k], sb[k], atol=1e-6), (key, k)


def test_checkpoints_hold_the_weight_average_and_synthesis_uses_it(tmp_path, prepared_demo_dataset):
    """state_dict = EMA (what load_vocoder_checkpoint vocodes with), current_model_state = live weights;
    ema_decay 0 turns the average off."""
    import dataclasses

    from tests.vocoders.conftest import tiny_vocoder_cfg
    from voicetrain.training.callbacks import ema_decay_at
    from voicetrain.training.train_vocoder import train_vocoder

    cfg = tiny_vocoder_cfg(max_steps=4, val_every_steps=100, checkpoint_every_steps=100, sample_every_steps=100)
    train_vocoder(prepared_demo_dataset, tmp_path / "ema", cfg)
    ckpt = load_checkpoint_safe(tmp_path / "ema" / "checkpoints" / "last.ckpt")
    ema, live = ckpt["state_dict"], ckpt["current_model_state"]
    gen = [k for k in ema if k.startswith("generator.")]
    assert gen and any(not torch.equal(ema[k], live[k]) for k in gen)
    assert ema_decay_at(3, cfg.optim.ema_decay) < 1.0  # the ramp: 4 updates move the average
    loaded = load_vocoder_checkpoint(tmp_path / "ema")
    for k, v in loaded.vocoder.state_dict().items():
        assert torch.equal(v, ema["generator." + k]), k

    off = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, ema_decay=0.0))
    train_vocoder(prepared_demo_dataset, tmp_path / "off", off)
    assert "current_model_state" not in load_checkpoint_safe(tmp_path / "off" / "checkpoints" / "last.ckpt")


def test_warm_start_continues_the_live_weights(tmp_path, tiny_vocoder_run, prepared_demo_dataset):
    """--from takes the source's live generator and discriminators (the pair of its GAN game), not the average."""
    from rich.console import Console

    from tests.vocoders.conftest import tiny_vocoder_cfg
    from voicetrain.training.train_vocoder import _warm_start, build_networks
    from voicetrain.training.vocoder_module import VocoderLightningModule

    import dataclasses

    cfg = dataclasses.replace(tiny_vocoder_cfg(), audio=PreparedDataset.open(prepared_demo_dataset).info.audio)
    g, mpd, mrd, gcfg = build_networks(cfg)
    lit = VocoderLightningModule(g, mpd, mrd, cfg, dataclasses.asdict(gcfg))
    _warm_start(lit, tiny_vocoder_run, cfg, Console(file=open(tmp_path / "log", "w")))
    live = load_checkpoint_safe(tiny_vocoder_run / "checkpoints" / "last.ckpt")["current_model_state"]
    for k, v in lit.state_dict().items():
        assert torch.equal(v, live[k]), k


def test_on_generated_and_warm_start(tmp_path, prepared_demo_dataset, tiny_run, tiny_vocoder_run):
    run = tmp_path / "ft"
    r = runner.invoke(app, ["train-vocoder", str(prepared_demo_dataset), "--out", str(run), "--max-steps", "2",
                            "--on-generated", str(tiny_run), "--from", str(tiny_vocoder_run), *TINY])
    assert r.exit_code == 0, r.output
    cfg = load_yaml(VocoderRunConfig, run / "config.yaml")
    assert cfg.on_generated == str(tiny_run.resolve()) and "tiny_vocoder" in cfg.init_from
    ds = PreparedDataset.open(prepared_demo_dataset)
    utts = ds.manifest("train")
    generated = sorted((run / "generated_mels").glob("*.npy"))
    assert len(generated) == len(utts) + 1  # every training utterance and the one validation utterance
    for u in utts[:3]:  # frame for frame the real mel's grid, different values
        gen = np.load(run / "generated_mels" / f"{u.audio_hash}.npy")
        real = np.load(cache_path(ds.root, ds.info.audio, u.audio_hash))["mel"]
        assert gen.shape == real.shape and np.isfinite(gen).all() and not np.allclose(gen, real)


def test_mismatched_on_generated_is_a_clear_error(tmp_path, prepared_demo_dataset):
    r = runner.invoke(app, ["train-vocoder", str(prepared_demo_dataset), "--out", str(tmp_path / "x"),
                            "--on-generated", str(tmp_path / "nope"), *TINY])
    assert r.exit_code == 1 and "does not exist" in r.output
