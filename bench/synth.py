"""Synthesis speed of a trained voice; prints one JSON line.

- RTF (synthesis seconds / audio seconds) over 20 Harvard sentences of about 10 words, on
  one thread and on two, split into acoustic model and vocoder;
- latency of one sentence (median) and cold start (process start to first audio, in a
  fresh subprocess);
- a Griffin-Lim iteration sweep on one thread: RTF and pocketsphinx CER of the same
  sentences at each iteration count, to pick the fastest setting that keeps intelligibility.

    .venv/bin/python bench/synth.py --run /tmp/voicetrain-bench/run-fastspeech2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib.resources import files

import numpy as np


def sentences(n: int) -> list[tuple[str, str]]:
    rows = files("voicetrain.data").joinpath("prompts/harvard_sentences.tsv").read_text(encoding="utf-8").splitlines()
    pairs = [tuple(r.split("\t", 1)) for r in rows if "\t" in r]
    ten = [p for p in pairs if 8 <= len(p[1].split()) <= 12]
    return ten[:n]


def timed_synthesis(synth, texts, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    synth.threads = threads
    synth.synthesize("Warm up the caches.")
    t_model = t_voc = audio_s = 0.0
    per_sentence = []
    for _, text in texts:
        ids, _ = synth.tokenizer(text)
        t0 = time.perf_counter()
        mel = synth.mel_for_ids(ids)
        t1 = time.perf_counter()
        wav = synth.vocoder(mel[None])
        t2 = time.perf_counter()
        t_model += t1 - t0
        t_voc += t2 - t1
        dur = wav.shape[-1] / synth.sample_rate
        audio_s += dur
        per_sentence.append(t2 - t0)
    return {"threads": threads, "rtf": round((t_model + t_voc) / audio_s, 4),
            "rtf_acoustic": round(t_model / audio_s, 5), "rtf_vocoder": round(t_voc / audio_s, 4),
            "latency_median_s": round(float(np.median(per_sentence)), 4), "audio_s": round(audio_s, 1)}


def cold_start(run: str) -> float:
    code = ("import time,sys; t=float(sys.argv[2]);"
            "from voicetrain.inference.synthesizer import Synthesizer;"
            "s=Synthesizer.from_checkpoint(sys.argv[1]); s.synthesize('Hello there.');"
            "print(time.time()-t)")
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code, run, repr(t)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="/tmp/voicetrain-bench/run-fastspeech2")
    ap.add_argument("--sentences", type=int, default=20)
    ap.add_argument("--sweep", default="4,8,16,32")
    args = ap.parse_args(argv)

    import torch

    from voicetrain.evaluation.metrics import error_rates
    from voicetrain.evaluation.models import Evaluator
    from voicetrain.inference.synthesizer import Synthesizer
    from voicetrain.vocoders import GriffinLim

    texts = sentences(args.sentences)
    synth = Synthesizer.from_checkpoint(args.run)
    default_iters = synth.vocoder.n_iter
    speed = [timed_synthesis(synth, texts, t) for t in (1, 2)]
    cold = cold_start(args.run)

    ev = Evaluator()
    torch.set_num_threads(1)
    sweep = []
    mels = [synth.mel_for_ids(synth.tokenizer(t)[0]) for _, t in texts]
    for n_iter in [int(x) for x in args.sweep.split(",")]:
        voc = GriffinLim(synth.audio, n_iter=n_iter)
        t_voc = audio_s = 0.0
        cers = []
        for mel, (_, text) in zip(mels, texts):
            t0 = time.perf_counter()
            wav = voc(mel[None])[0].numpy()
            t_voc += time.perf_counter() - t0
            audio_s += len(wav) / synth.sample_rate
            cers.append(error_rates(text, ev.pocketsphinx.transcribe(wav, synth.sample_rate)).cer)
        sweep.append({"gl_iters": n_iter, "rtf_vocoder_1thread": round(t_voc / audio_s, 4),
                      "cer": round(float(np.mean(cers)), 4)})
    n_params = sum(p.numel() for p in synth.model.parameters())
    print(json.dumps({
        "bench": "synth", "run": args.run, "checkpoint": synth.checkpoint, "params": n_params,
        "default_gl_iters": default_iters, "sentences": len(texts), "speed": speed,
        "cold_start_s": round(cold, 2), "griffin_lim_sweep": sweep,
        "load_avg_1m": round(os.getloadavg()[0], 2), "machine": f"{os.cpu_count()} cpu",
    }))


if __name__ == "__main__":
    sys.exit(main())
