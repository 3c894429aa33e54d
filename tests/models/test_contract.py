"""The shared model contract, parametrized over the model registry (tiny presets, synthetic batches)."""

from __future__ import annotations

import copy

import pytest
import torch

from voicetrain.models.registry import MODELS, build_model, model_config

N_SYMBOLS, N_MELS = 40, 20


def make_batch(B=3, L=12, T=60, seed=0, n_speakers=2):
    g = torch.Generator().manual_seed(seed)
    token_lens = torch.tensor([L] + [L - 2 - i for i in range(B - 1)])
    mel_lens = torch.tensor([T] + [T - 7 - 3 * i for i in range(B - 1)])
    tokens = torch.randint(1, N_SYMBOLS, (B, L), generator=g)
    tokens[torch.arange(L)[None, :] >= token_lens[:, None]] = 0
    # smooth, token-dependent mels so that there is something learnable
    mels = torch.randn(B, N_MELS, T, generator=g).cumsum(-1) / 5
    mels = mels * (torch.arange(T)[None, None, :] < mel_lens[:, None, None])
    pitch = torch.randn(B, T, generator=g)
    voiced = torch.rand(B, T, generator=g) > 0.3
    energy = torch.randn(B, T, generator=g)
    speakers = torch.arange(B) % n_speakers
    return dict(tokens=tokens, token_lens=token_lens, mels=mels, mel_lens=mel_lens, pitch=pitch,
                voiced=voiced, energy=energy, speakers=speakers)


# architecture variants a config can select, each held to the same contract
VARIANTS = {"fastspeech2+fft-decoder": ("fastspeech2", {"decoder_type": "fft", "mel_prior": False}),
            "fastspeech2+gaussian-aligner": ("fastspeech2", {"aligner": "gaussian"})}


def tiny(name, n_speakers=2):
    torch.manual_seed(0)
    model, overrides = VARIANTS.get(name, (name, {}))
    return build_model(model, model_config(model, "tiny", overrides), N_SYMBOLS, N_MELS, n_speakers)


def step_loss(model, batch, step=1000):
    out = model(**batch)
    return out, model.loss(out, batch["mels"], batch["mel_lens"], batch["token_lens"], step=step)


@pytest.fixture(params=sorted(MODELS) + sorted(VARIANTS))
def name(request):
    return request.param


def test_shapes_and_finite_losses(name):
    model = tiny(name)
    batch = make_batch()
    out, losses = step_loss(model, batch)
    B, _, T = batch["mels"].shape
    assert out.mel.shape == (B, N_MELS, T)
    for k, v in losses.items():
        assert torch.isfinite(v), k
    losses["loss"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_every_parameter_updated(name):
    model = tiny(name)
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    batch = make_batch()
    for _ in range(3):
        _, losses = step_loss(model, batch)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    unchanged = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and torch.equal(v, before[k])]
    assert not unchanged, f"parameters never updated: {unchanged}"


def test_save_load_identical_outputs(name, tmp_path):
    model = tiny(name).eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = tiny(name)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    other.eval()
    tokens = make_batch()["tokens"][:1, :10]
    torch.manual_seed(1)
    a, la = model.infer(tokens, torch.tensor([1]))
    torch.manual_seed(1)
    b, lb = other.infer(tokens, torch.tensor([1]))
    assert torch.equal(la, lb) and torch.allclose(a, b)


def test_bounded_inference_on_odd_input(name):
    model = tiny(name).eval()
    for L in (1, 2, 600):  # one phoneme ... a very long input
        tokens = torch.randint(1, N_SYMBOLS, (1, L))
        mel, lens = model.infer(tokens, torch.tensor([0]))
        assert 1 <= int(lens[0]) <= model.cfg.max_frames
        assert mel.shape[-1] <= model.cfg.max_frames and torch.isfinite(mel).all()


def test_overfit_four_utterances(name):
    """Teacher-forced memorization of 4 utterances drives the mel loss down at least 5x."""
    model = tiny(name)
    torch.manual_seed(0)
    batch = make_batch(B=4, L=10, T=40, seed=3)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for i in range(400):
        _, losses = step_loss(model, batch, step=i)
        if first is None:
            first = float(losses["mel"])
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert float(losses["mel"]) < first / 5, (first, float(losses["mel"]))
