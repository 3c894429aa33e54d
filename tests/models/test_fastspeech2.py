"""FastSpeech 2 specifics: aligner durations, length regulation, controls."""

import torch

from tests.models.test_contract import make_batch, tiny
from voicetrain.models.aligner import beta_binomial_log_prior, hard_alignment
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
