"""Tacotron 2 specifics: guided attention, bounded stop-token decoding, attention durations."""

import torch

from tests.models.test_contract import N_MELS, N_SYMBOLS, make_batch, tiny
from voicetrain.models.registry import build_model, model_config
from voicetrain.models.tacotron2 import guided_attention_loss


def test_guided_attention_prefers_the_diagonal():
    S, L = 20, 10
    diagonal = torch.zeros(1, S, L)
    diagonal[0, torch.arange(S), torch.arange(S) * L // S] = 1.0
    uniform = torch.full((1, S, L), 1.0 / L)
    anti = diagonal.flip(-1)
    lens = (torch.tensor([L]), torch.tensor([S]))
    d, u, a = (float(guided_attention_loss(x, *lens, sigma=0.2)) for x in (diagonal, uniform, anti))
    assert d < 0.1 < u < a
    # padded steps and tokens carry no penalty
    padded = torch.cat([diagonal, torch.ones(1, 5, L)], 1)
    padded = torch.cat([padded, torch.ones(1, S + 5, 3)], 2)
    assert abs(float(guided_attention_loss(padded, *lens, sigma=0.2)) - d) < 1e-6


def _never_stops(model):
    with torch.no_grad():
        model.stop_proj.weight.zero_()
        model.stop_proj.bias.fill_(-1e4)
    return model


def test_infer_runs_to_the_cap_when_stop_never_fires():
    model = _never_stops(tiny("tacotron2")).eval()
    for L in (1, 7):
        _, lens = model.infer(torch.randint(1, N_SYMBOLS, (1, L)))
        assert int(lens[0]) == model.cfg.max_frames_per_token * L + model.cfg.extra_frames
    # the absolute cap wins over the per-token budget (and L not a multiple of r is fine)
    capped = _never_stops(build_model("tacotron2", model_config("tacotron2", "tiny", {"max_frames": 50}),
                                      N_SYMBOLS, N_MELS, 1)).eval()
    mel, lens = capped.infer(torch.randint(1, N_SYMBOLS, (2, 30)), token_lens=torch.tensor([30, 2]))
    assert lens.tolist() == [50, 2 * capped.cfg.max_frames_per_token + capped.cfg.extra_frames]
    assert mel.shape == (2, N_MELS, 50) and float(mel[1, :, 44:].abs().sum()) == 0.0


def _stops_at_every_step(model):
    with torch.no_grad():
        model.stop_proj.weight.zero_()
        model.stop_proj.bias.copy_(torch.tensor([-1e4] * (model.cfg.reduction_factor - 1) + [1e4]))
    return model


def test_infer_stops_when_the_stop_token_fires():
    no_minimum = build_model("tacotron2", model_config("tacotron2", "tiny", {"min_frames_per_token": 0.0}),
                             N_SYMBOLS, N_MELS, 1)
    model = _stops_at_every_step(no_minimum).eval()
    _, lens = model.infer(torch.randint(1, N_SYMBOLS, (1, 12)))
    assert int(lens[0]) == model.cfg.reduction_factor  # the last frame of the first step said stop


def test_a_stop_token_that_fires_at_once_still_gets_a_minimum_length():
    """An untrained stop token ended "Hi." after 2 frames (23 ms); now each token gets its minimum."""
    model = _stops_at_every_step(tiny("tacotron2")).eval()
    r, L = model.cfg.reduction_factor, 12
    _, lens = model.infer(torch.randint(1, N_SYMBOLS, (2, L)), token_lens=torch.tensor([L, 3]))
    minimum = [int(-(-n * model.cfg.min_frames_per_token // 1)) for n in (L, 3)]
    # the first stop heard at or after the minimum: the end of the step that reaches it
    assert lens.tolist() == [-(-m // r) * r for m in minimum]


def test_empty_input_and_speed_are_bounded():
    model = _never_stops(tiny("tacotron2")).eval()
    mel, lens = model.infer(torch.zeros(1, 0, dtype=torch.long))
    assert 1 <= int(lens[0]) <= model.cfg.max_frames and torch.isfinite(mel).all()
    tokens = torch.randint(1, N_SYMBOLS, (1, 5))
    _, normal = model.infer(tokens)
    _, fast = model.infer(tokens, speed=2.0)
    slow, slow_lens = model.infer(tokens, speed=0.5)
    assert int(fast[0]) == round(int(normal[0]) / 2) and int(slow_lens[0]) == 2 * int(normal[0])
    assert slow.shape[-1] == int(slow_lens[0])


def test_prenet_dropout_stays_on_at_synthesis():
    model = _never_stops(tiny("tacotron2")).eval()
    tokens = torch.randint(1, N_SYMBOLS, (1, 6))
    torch.manual_seed(0)
    a, _ = model.infer(tokens)
    torch.manual_seed(1)
    b, _ = model.infer(tokens)
    assert not torch.allclose(a, b)


def test_teacher_forced_shapes_with_lengths_not_multiple_of_r():
    model = tiny("tacotron2")
    b = make_batch(B=3, L=9, T=41)  # 41, 34, 31 frames: none a multiple of r=3
    out = model(**b)
    r = model.cfg.reduction_factor
    assert out.mel.shape == out.mel_before.shape == (3, N_MELS, 41)
    assert out.soft_attention.shape == (3, 41, 9)
    assert out.step_attention.shape == (3, -(-41 // r), 9) and out.stop_logits.shape == (3, 42)
    # padded tokens get no attention
    assert float(out.soft_attention[1, :, int(b["token_lens"][1]):].detach().sum()) < 1e-3


def test_align_durations_sum_to_mel_lengths():
    model = tiny("tacotron2").eval()
    b = make_batch(B=4, L=15, T=80)
    durs = model.align(b["tokens"], b["token_lens"], b["mels"], b["mel_lens"], b["speakers"])
    assert durs.shape == (4, 15) and durs.dtype == torch.long
    assert torch.equal(durs.sum(1), b["mel_lens"])
    for i in range(4):
        assert int(durs[i, int(b["token_lens"][i]):].sum()) == 0
