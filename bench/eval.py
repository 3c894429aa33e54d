"""Cost of each evaluation metric on this machine: prints ONE JSON line.

    .venv/bin/python bench/eval.py [--n 10]

Synthesizes N Harvard sentences with flite's rms voice (and slt as the reference
recording of the same text), loads each model once through an Evaluator, runs every
metric once on a warm-up utterance (first calls compile/allocate; reported as
``warmup_s``), then times the N utterances. Figures are seconds per utterance, and
``rtf`` is seconds per second of audio.

ASR: pocketsphinx, and Whisper tiny.en (faster-whisper, int8) on one and on two CTranslate2
threads, with beam 5 (eval's default) and greedy (training's quality tracking); each Whisper
configuration is loaded separately and its load time reported. ``cer_*`` are the mean CERs of
the flite rms sentences (the same audio for every recognizer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from voicetrain.audio.features import f0_yin
from voicetrain.config import AudioConfig
from voicetrain.evaluation import metrics
from voicetrain.evaluation.models import Dnsmos, Evaluator, WhisperASR


def _harvard(n: int) -> list[str]:
    path = Path(metrics.__file__).resolve().parents[1] / "data" / "prompts" / "harvard_sentences.tsv"
    rows = [ln.split("\t", 1)[1] for ln in path.read_text(encoding="utf-8").splitlines() if "\t" in ln]
    return rows[: n + 1]


def _flite(voice: str, text: str, path: Path) -> tuple[np.ndarray, int]:
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    x, sr = sf.read(str(path), dtype="float32")
    return x, sr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    args = ap.parse_args()
    cfg = AudioConfig()
    threads_before = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        texts = _harvard(args.n)
        utts = [(t, _flite("rms", t, Path(tmp) / f"rms{i}.wav"), _flite("slt", t, Path(tmp) / f"slt{i}.wav"))
                for i, t in enumerate(texts)]

    ev = Evaluator()
    # Touch each model once so load times are measured apart from the per-utterance cost.
    ev.pocketsphinx, ev.speaker_encoder, ev.dnsmos  # noqa: B018
    t = time.perf_counter()
    dnsmos_1thread = Dnsmos(threads=1)
    load_dnsmos_1 = time.perf_counter() - t
    whisper, whisper_load = {}, {}
    for threads in (1, 2):
        for beam in (5, 1):
            t = time.perf_counter()
            whisper[(threads, beam)] = WhisperASR(threads=threads, beam_size=beam)
            whisper_load[f"asr_whisper_{threads}thread_beam{beam}"] = round(time.perf_counter() - t, 3)

    def mcd_dtw(a, r):
        ca = metrics.mel_cepstrum(a[0], a[1], cfg)[1:]
        cr = metrics.mel_cepstrum(r[0], r[1], cfg)[1:]
        metrics.dtw_path(ca, cr)

    def f0(a, r):
        from voicetrain.audio.io import resample

        f0_yin(resample(a[0], a[1], cfg.sample_rate), cfg)
        f0_yin(resample(r[0], r[1], cfg.sample_rate), cfg)

    def whisper_job(threads, beam):
        return lambda text, a, r: metrics.error_rates(text, whisper[(threads, beam)].transcribe(*a))

    jobs = {
        "asr_pocketsphinx": lambda text, a, r: metrics.error_rates(text, ev.pocketsphinx.transcribe(*a)),
        **{f"asr_whisper_{t}thread_beam{b}": whisper_job(t, b) for t in (1, 2) for b in (5, 1)},
        "speaker_embedding": lambda text, a, r: ev.speaker_encoder.embed(*a),
        "dnsmos": lambda text, a, r: ev.dnsmos.score(*a),
        "dnsmos_1thread": lambda text, a, r: dnsmos_1thread.score(*a),
        "mcd_dtw": lambda text, a, r: mcd_dtw(a, r),
        "f0_yin_pair": lambda text, a, r: f0(a, r),
        "reference_distance": lambda text, a, r: metrics.reference_distance(*a, *r, cfg),
    }
    warm, measured = utts[0], utts[1:]
    audio_s = float(np.mean([len(a[0]) / a[1] for _, a, _ in measured]))
    out: dict = {"bench": "eval", "n_utterances": len(measured), "mean_audio_s": round(audio_s, 3),
                 "load_s": {k: round(v, 3) for k, v in ev.load_seconds.items()} | {"dnsmos_1thread": round(load_dnsmos_1, 3)}
                 | whisper_load,
                 "warmup_s": {}, "s_per_utt": {}, "rtf": {}}
    for name, fn in jobs.items():
        t = time.perf_counter()
        fn(*warm)
        out["warmup_s"][name] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        results = [fn(*u) for u in measured]
        per = (time.perf_counter() - t) / len(measured)
        out["s_per_utt"][name] = round(per, 4)
        out["rtf"][name] = round(metrics.real_time_factor(per, audio_s), 4)
        if name.startswith("asr_"):
            out.setdefault("cer_flite_rms_harvard", {})[name] = round(float(np.mean([r.cer for r in results])), 4)
    out["torch_threads"] = torch.get_num_threads()
    out["torch_threads_restored"] = torch.get_num_threads() == threads_before
    out["onnx_threads"] = ev.onnx_threads
    out["cpus"] = os.cpu_count()
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    out["machine"] = platform.processor() or platform.machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
