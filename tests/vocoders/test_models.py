"""Vocos generator and the discriminators: shapes, GAN steps update both sides, bounded memory on 30 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from voicetrain.config import AudioConfig
from voicetrain.vocoders import discriminators as D
from voicetrain.vocoders.vocos import PRESETS, Vocos

AUDIO = AudioConfig()


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
@pytest.mark.parametrize("frames", [1, 3, 32])
def test_generator_output_shape(preset, frames):
    g = Vocos(PRESETS[preset], AUDIO).eval()
    with torch.inference_mode():
        wav = g(torch.randn(2, AUDIO.n_mels, frames) - 5)
    assert wav.shape == (2, frames * AUDIO.hop_length)
    assert torch.isfinite(wav).all()


@pytest.mark.parametrize("frames", [1, 3, 32, 200])
def test_every_vocoder_returns_frames_times_hop_samples(frames):
    """One contract for all vocoders: T mel frames -> T * hop samples (Griffin-Lim returned (T - 1) * hop)."""
    from voicetrain.vocoders.griffin_lim import GriffinLim

    mel = torch.randn(1, AUDIO.n_mels, frames) - 5
    for voc in (GriffinLim(AUDIO, n_iter=2), Vocos(PRESETS["tiny"], AUDIO).eval()):
        with torch.inference_mode():
            assert voc(mel).shape == (1, frames * AUDIO.hop_length), type(voc).__name__


def test_generator_is_local_in_time():
    """Fully convolutional with per-frame norms: a change at frame t only moves output near frame t."""
    g = Vocos(PRESETS["tiny"], AUDIO).eval()
    mel = torch.randn(1, AUDIO.n_mels, 64) - 5
    changed = mel.clone()
    changed[..., 40] += 3
    with torch.inference_mode():
        a, b = g(mel), g(changed)
    reach = (g.receptive_field // 2 + 2) * AUDIO.hop_length + AUDIO.n_fft
    diff = (a - b).abs()[0]
    assert diff[: 40 * AUDIO.hop_length - reach].max() == 0
    assert diff.max() > 0


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
def test_discriminator_shapes(preset):
    cfg = D.PRESETS[preset]
    wav = torch.randn(3, 8192)
    for disc, n in ((D.MultiPeriodDiscriminator(cfg), len(cfg.periods)),
                    (D.MultiResolutionDiscriminator(cfg), len(cfg.resolutions))):
        logits, feats = disc(wav)
        assert len(logits) == len(feats) == n
        for lg, fs in zip(logits, feats):
            assert lg.shape[0] == 3 and lg.ndim == 2 and torch.isfinite(lg).all()
            assert all(f.shape[0] == 3 for f in fs)  # batch first: feature matching slices real/fake halves


def _synthetic_loader(n: int = 8, frames: int = 32):
    """Noise bursts and their log-mels: enough for GAN steps, no dataset needed."""
    from torch.utils.data import DataLoader

    from voicetrain.audio.features import MelSpectrogram
    from voicetrain.data.vocoder_dataset import VocoderItem, collate_vocoder

    g = torch.Generator().manual_seed(0)
    audio = torch.randn(n, frames * AUDIO.hop_length, generator=g) * 0.1
    with torch.no_grad():
        mels = MelSpectrogram(AUDIO)(audio)[:, :, :frames]
    items = [VocoderItem(str(i), mels[i], audio[i]) for i in range(n)]
    return DataLoader(items, batch_size=4, collate_fn=collate_vocoder)


def test_gan_steps_update_generator_and_discriminators(tmp_path):
    import dataclasses

    import lightning as L

    from tests.vocoders.conftest import tiny_vocoder_cfg
    from voicetrain.training.train_vocoder import build_networks
    from voicetrain.training.vocoder_module import VocoderLightningModule

    cfg = tiny_vocoder_cfg()
    gen, mpd, mrd, gcfg = build_networks(cfg)
    lit = VocoderLightningModule(gen, mpd, mrd, cfg, dataclasses.asdict(gcfg))
    before = {k: v.detach().clone() for k, v in lit.named_parameters()}
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(lit, train_dataloaders=_synthetic_loader())
    assert trainer.global_step == 3  # generator updates; the discriminator's steps are not counted
    stale = [k for k, v in lit.named_parameters() if torch.equal(v.detach(), before[k])]
    assert not stale, f"parameters not updated by 3 GAN steps: {stale}"
    assert any(k.startswith("generator.") for k in before) and any(k.startswith("mpd.") for k in before)
    assert any(k.startswith("mrd.") for k in before)


def test_reconstruction_phase_leaves_discriminators_alone(tmp_path):
    import dataclasses

    import lightning as L

    from tests.vocoders.conftest import tiny_vocoder_cfg
    from voicetrain.training.train_vocoder import build_networks
    from voicetrain.training.vocoder_module import VocoderLightningModule

    cfg = tiny_vocoder_cfg()
    cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, gan_start_step=100))
    gen, mpd, mrd, gcfg = build_networks(cfg)
    lit = VocoderLightningModule(gen, mpd, mrd, cfg, dataclasses.asdict(gcfg))
    d_before = {k: v.detach().clone() for k, v in lit.named_parameters() if not k.startswith("generator.")}
    g_before = {k: v.detach().clone() for k, v in lit.generator.named_parameters()}
    L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=str(tmp_path)).fit(lit, _synthetic_loader())
    assert all(torch.equal(v, dict(lit.named_parameters())[k]) for k, v in d_before.items())
    assert not any(torch.equal(v, dict(lit.generator.named_parameters())[k]) for k, v in g_before.items())


MEMORY_SCRIPT = """
import json, resource, sys, torch
torch.set_num_threads(1)
from voicetrain.config import AudioConfig
from voicetrain.vocoders.vocos import PRESETS, Vocos
a = AudioConfig()
v = Vocos(PRESETS["cpu"], a).eval()
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with torch.inference_mode():
    v(torch.full((1, a.n_mels, 86), -5.0))  # one-off allocations of a first call, outside the measurement
    base = peak()
    T = int(30 * a.frames_per_second)
    wav = v(torch.full((1, a.n_mels, T), -5.0))
print(json.dumps({"delta_mb": peak() - base, "samples": wav.shape[-1], "frames": T}))
"""


def test_memory_bounded_on_a_30_second_mel():
    """Peak RSS growth of vocoding a 30 s mel, in a fresh process (ru_maxrss is a high-water mark, so the
    baseline must be the process's own). ~45 MB measured: spectrum, head output and inverse-STFT frames,
    all linear in length; 120 MB leaves room for allocator noise but fails on any quadratic blow-up
    (a 30 s x 30 s attention map alone would be 26 MB per channel)."""
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, cwd=root,
                       env={"PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["samples"] == out["frames"] * AUDIO.hop_length
    assert out["delta_mb"] < 120, out
