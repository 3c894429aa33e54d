"""bench/vocoder.py's bar: each target on its own, and the same bar applied to the real recordings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "vocoder.py"
spec = importlib.util.spec_from_file_location("bench_vocoder", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)


def _system(cer: list[float], dnsmos: float, similarity: float, against: list[float] | None = None) -> dict:
    out = {"dnsmos_ovrl": dnsmos, "speaker_similarity": similarity, "per_utterance": {"cer_whisper": cer}}
    if against is not None:
        out["minus_griffin_lim"] = {"cer_whisper": bench.paired_difference(cer, against)}
    return out


def test_paired_difference_interval_brackets_the_mean():
    d = bench.paired_difference([0.1, 0.2, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0])
    assert d["mean"] == 0.15
    assert d["ci95"][0] <= 0.15 <= d["ci95"][1]
    assert d["ci95"][0] >= 0.0 and d["ci95"][1] <= 0.3


def test_real_recordings_that_fail_the_cer_bar_say_so():
    gl_cer = [0.05, 0.10, 0.00, 0.08, 0.02, 0.06] * 5
    # The recordings are a little better than Griffin-Lim on average but noisy: the interval's upper end
    # stays above +0.005, so no vocoder could pass the CER bar on these items.
    real_cer = [0.00, 0.17, 0.00, 0.04, 0.00, 0.05] * 5
    gl = _system(gl_cer, 1.7, 0.84)
    real = _system(real_cer, 2.6, 0.95, against=gl_cer)
    neural = _system(gl_cer, 3.0, 0.91, against=gl_cer)  # equal to Griffin-Lim on every item
    t = bench.targets(neural, gl, 0.005, real)
    assert real["minus_griffin_lim"]["cer_whisper"]["mean"] < 0
    assert real["minus_griffin_lim"]["cer_whisper"]["ci95"][1] > 0.005
    assert t["real_recordings_meet_whisper_cer_bar"] is False
    assert t["real_recordings_meet_dnsmos_2.9"] is False
    assert t["whisper_cer_no_worse_than_gl (CI upper <= +0.005)"] is True  # a zero difference has a zero interval
    assert t["dnsmos_ge_2.9"] and t["dnsmos_ge_gl_plus_0.8"] and t["speaker_similarity_ge_gl"] and t["rtf_le_0.01"]


def test_targets_without_real_keep_the_five_targets():
    gl = _system([0.1] * 4, 1.7, 0.84)
    neural = _system([0.2] * 4, 2.0, 0.80, against=[0.1] * 4)
    t = bench.targets(neural, gl, 0.02)
    assert set(t) == {"whisper_cer_no_worse_than_gl (CI upper <= +0.005)", "dnsmos_ge_2.9", "dnsmos_ge_gl_plus_0.8",
                      "speaker_similarity_ge_gl", "rtf_le_0.01"}
    assert not any(t.values())
