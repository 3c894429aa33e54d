"""FastSpeech 2 specifics: aligner durations, length regulation, controls."""

import torch

from tests.models.test_contract import make_batch, tiny
import pytest

from voicetrain.config import ConfigError
from voicetrain.models.aligner import beta_binomial_log_prior, gaussian_log_likelihood, hard_alignment, monotonic_path
from voicetrain.models.fastspeech2 import FastSpeech2Config
from voicetrain.models.layers import average_by_duration, regulate_length


def test_mas_durations_sum_to_mel_length():
    model = tiny("fastspeech2")
    b = make_batch(B=4, L=15, T=80)
    out = model(**b)
    assert torch.equal(out.durations.sum(1), b["mel_lens"])
    # padded tokens get no frames; the path is monotonic (each frame one token, non-decreasing)
    for i in range(4):
        assert int(out.durations[i, int(b["token_lens"][i]):].sum()) == 0
        idx = out.hard_attention[i, : int(b["mel_lens"][i])].argmax(-1)
        assert bool((idx[1:] >= idx[:-1]).all())


def test_prior_is_a_distribution_and_diagonal():
    lp = beta_binomial_log_prior(torch.tensor([10]), torch.tensor([50]), 10, 50)
    p = lp.exp()[0]
    assert torch.allclose(p.sum(-1), torch.ones(50), atol=1e-4)
    assert p[0].argmax() == 0 and p[-1].argmax() == 9


def test_hard_alignment_of_diagonal_attention():
    soft = torch.zeros(1, 6, 3)
    for t in range(6):
        soft[0, t, t // 2] = 1.0
    hard = hard_alignment(soft + 1e-3, torch.tensor([3]), torch.tensor([6]))
    assert hard.sum(1).tolist() == [[2, 2, 2]]


def test_gaussian_search_recovers_the_durations_that_made_the_mels():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(2, 4, 8, generator=g) * 3  # (B, L, M): four distinct token means
    durations = torch.tensor([[3, 1, 5, 2], [2, 4, 1, 0]])  # the second item has 3 tokens
    mels = torch.zeros(2, 8, 11)
    for b in range(2):
        frames = torch.repeat_interleave(means[b], durations[b], dim=0)  # (T_b, M)
        mels[b, :, : len(frames)] = frames.T + 0.1 * torch.randn(frames.T.shape, generator=g)
    hard = monotonic_path(gaussian_log_likelihood(mels, means), torch.tensor([4, 3]), torch.tensor([11, 7]))
    assert hard.sum(1).long().tolist() == durations.tolist()


def test_gaussian_aligner_durations_sum_and_its_loss_trains_the_means():
    model = tiny("fastspeech2+gaussian-aligner")
    assert model.aligner is None  # no separate attention network to train
    b = make_batch(B=3, L=12, T=60)
    out = model(**b)
    assert torch.equal(out.durations.sum(1), b["mel_lens"])
    assert torch.equal(model.align(b["tokens"], b["token_lens"], b["mels"], b["mel_lens"], b["speakers"]),
                       out.durations)
    losses = model.loss(out, b["mels"], b["mel_lens"], b["token_lens"], step=1000)
    assert float(losses["bin"]) == 0.0 and float(losses["align"]) > 0
    model.zero_grad()
    losses["align"].backward()
    # the alignment loss teaches the encoder each token's sound, not only the projection
    assert model.mel_prior.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_gaussian_aligner_needs_the_mel_prior():
    with pytest.raises(ConfigError, match="aligner"):
        FastSpeech2Config(aligner="gaussian", mel_prior=False)
    with pytest.raises(ConfigError, match="aligner"):
        FastSpeech2Config(aligner="ctc")


def test_regulate_length_and_average():
    x = torch.arange(3, dtype=torch.float32).view(1, 3, 1)
    y, lens = regulate_length(x, torch.tensor([[2, 0, 3]]))
    assert lens.tolist() == [5] and y[0, :, 0].tolist() == [0, 0, 2, 2, 2]
    avg = average_by_duration(torch.tensor([[1.0, 3.0, 5.0, 7.0, 9.0]]), torch.ones(1, 5, dtype=torch.bool),
                              torch.tensor([[2, 0, 3]]))
    assert avg.tolist() == [[2.0, 0.0, 7.0]]


def test_speed_control_changes_length():
    model = tiny("fastspeech2").eval()
    tokens = torch.randint(1, 40, (1, 20))
    # make durations non-trivial
    with torch.no_grad():
        model.duration_predictor.proj.bias.fill_(2.0)
    _, slow = model.infer(tokens, speed=0.5)
    _, fast = model.infer(tokens, speed=2.0)
    assert int(slow[0]) > int(fast[0]) * 3


def test_curriculum_dropout_ramps_with_the_training_step():
    from voicetrain.models.fastspeech2 import FastSpeech2
    from voicetrain.models.layers import MultiHeadSelfAttention
    from voicetrain.models.registry import model_config

    cfg = model_config("fastspeech2", "cpu", {"hidden": 32, "ff_dim": 64, "predictor_filters": 32, "aligner_dim": 16,
                                              "dropout_ramp_steps": [100, 300]})
    model = FastSpeech2(cfg, n_symbols=40, n_mels=80)

    def rates(step):
        model.set_training_step(step)
        return ({m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "_predictor" in n},
                {m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "_predictor" not in n},
                {m.dropout for m in model.modules() if isinstance(m, MultiHeadSelfAttention)})

    assert rates(0) == rates(100) == ({0.0}, {0.0}, {0.0})
    assert rates(200) == ({0.25}, {0.05}, {0.05})
    assert rates(300) == rates(10_000) == ({0.5}, {0.1}, {0.1})


def test_training_applies_the_dropout_schedule(tmp_path, prepared_demo_dataset, monkeypatch):
    """The Lightning module sets the model's dropout for each step: 4 steps into a [0, 8] ramp
    the live model's rates are at half. The speed estimate before training runs at step 0's rates too."""
    import dataclasses

    from tests.conftest import tiny_cfg
    from voicetrain.training.lit_module import TTSLightningModule
    from voicetrain.training.train import train

    seen = {}
    original = TTSLightningModule.on_train_batch_start

    def spy(self, batch, batch_idx):
        original(self, batch, batch_idx)
        seen[int(self.global_step)] = max(m.p for m in self.model.modules() if isinstance(m, torch.nn.Dropout))

    estimate_rates = []
    original_losses = TTSLightningModule.forward_losses

    def spy_losses(self, batch):
        if self._trainer is None:  # the throw-away copy of estimate_speed
            estimate_rates.append(max(m.p for m in self.model.modules() if isinstance(m, torch.nn.Dropout)))
        return original_losses(self, batch)

    monkeypatch.setattr(TTSLightningModule, "on_train_batch_start", spy)
    monkeypatch.setattr(TTSLightningModule, "forward_losses", spy_losses)
    cfg = dataclasses.replace(tiny_cfg(max_steps=5, val_every_steps=100, checkpoint_every_steps=100),
                              model_config={"dropout": 0.2, "predictor_dropout": 0.4, "dropout_ramp_steps": [0, 8]})
    train(prepared_demo_dataset, tmp_path / "run", cfg)
    assert seen[0] == 0.0 and abs(seen[4] - 0.2) < 1e-9
    assert estimate_rates and set(estimate_rates) == {0.0}
