"""Which mel band should voicetrain predict and vocode: f_max 8000 or sample_rate / 2? Prints ONE JSON line.

Copy-synthesis on held-out voices that no corpus of the project trains on: each real recording
(resampled to 22.05 kHz) becomes an 80-bin log-mel with f_max = 8000 and with f_max = 11025, and
Griffin-Lim (32 iterations, what every voice uses without a neural vocoder) turns each back into
audio. Both copies and the recording are scored the same way: Whisper tiny.en CER (the judge),
pocketsphinx CER beside it, speaker similarity to the centroid of the voice's real recordings,
DNSMOS OVRL, MCD-DTW against the recording, and the share of the signal's energy above 8 kHz.
Paired differences (full band minus 8 kHz) come with 95% bootstrap intervals.

    .venv/bin/python bench/band.py [--voices flite:slt,espeak:en-us+f5:p65:s150] [--sentences 20]

flite voices are 16 kHz inside (nothing above 8 kHz); espeak-ng speaks at 22.05 kHz and has a full
band: the pair shows what the choice costs or buys on both kinds of recording.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

sys_path = Path(__file__).resolve().parent
import sys  # noqa: E402

sys.path.insert(0, str(sys_path))
from vocoder import paired_difference  # noqa: E402  (bench/vocoder.py: the same bootstrap)


def speak(voice: str, text: str, out: Path) -> None:
    engine, name = voice.split(":", 1)
    if engine == "flite":
        subprocess.run(["flite", "-voice", name, "-t", text, "-o", str(out)], check=True)
    elif engine == "espeak":
        v, *rest = name.split(":")
        args = ["espeak-ng", "-v", v, "-w", str(out)]
        for r in rest:
            args += ["-p" if r[0] == "p" else "-s", r[1:]]
        subprocess.run(args + [text], check=True)
    else:
        raise SystemExit(f"{voice}: flite:NAME or espeak:VOICE[:pN][:sN]")


def high_band_share(wav: np.ndarray, sr: int, cut: float = 8000.0) -> float:
    spec = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / sr)
    return float(spec[freqs >= cut].sum() / max(spec.sum(), 1e-12))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voices", default="flite:slt,espeak:en-us+f5:p65:s150")
    ap.add_argument("--sentences", type=int, default=20)
    ap.add_argument("--gl-iters", type=int, default=32)
    ap.add_argument("--work", default="/tmp/voicetrain-bench-band")
    args = ap.parse_args(argv)

    import soundfile as sf
    import torch

    from voicetrain.audio.features import log_mel
    from voicetrain.audio.io import resample
    from voicetrain.config import AudioConfig
    from voicetrain.evaluation.evaluate_run import read_texts
    from voicetrain.evaluation.metrics import cosine_similarity, error_rates, mean_embedding, reference_distance
    from voicetrain.evaluation.models import Evaluator
    from voicetrain.vocoders.griffin_lim import GriffinLim

    t_all = time.time()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(1)
    base = AudioConfig()
    bands = {"f_max_8000": dataclasses.replace(base, f_max=8000.0),
             "f_max_11025": dataclasses.replace(base, f_max=base.sample_rate / 2)}
    sentences = read_texts("harvard")[: args.sentences]
    ev = Evaluator(asr="both", torch_threads=1)
    out = {"bench": "band", "sentences": len(sentences), "gl_iters": args.gl_iters, "voices": {},
           "load_avg_1m_before": round(load_before, 2)}
    for voice in [v.strip() for v in args.voices.split(",") if v.strip()]:
        folder = Path(args.work) / voice.replace(":", "_").replace("+", "_")
        folder.mkdir(parents=True, exist_ok=True)
        reals = []
        for sid, text in sentences:
            p = folder / f"{sid}.wav"
            if not p.exists():
                with tempfile.TemporaryDirectory() as tmp:
                    speak(voice, text, Path(tmp) / "a.wav")
                    a, sr = sf.read(Path(tmp) / "a.wav", dtype="float32")
                    sf.write(p, resample(a, sr, base.sample_rate), base.sample_rate)
            reals.append(sf.read(p, dtype="float32")[0])
        sr = base.sample_rate
        centroid = mean_embedding([ev.speaker_encoder.embed(a, sr) for a in reals])
        systems = {"real": reals}
        for name, cfg in bands.items():
            gl = GriffinLim(cfg, n_iter=args.gl_iters)
            with torch.inference_mode():
                systems[name] = [np.clip(gl(torch.from_numpy(log_mel(a, cfg))[None])[0].numpy(), -1, 1)
                                 for a in reals]
        per: dict[str, dict[str, list[float]]] = {}
        for name, wavs in systems.items():
            rows = {"cer_whisper": [], "cer_pocketsphinx": [], "speaker_similarity": [], "dnsmos_ovrl": [],
                    "mcd_db": [], "energy_above_8k": []}
            for (sid, text), wav, real in zip(sentences, wavs, reals):
                rows["cer_whisper"].append(error_rates(text, ev.whisper.transcribe(wav, sr)).cer)
                rows["cer_pocketsphinx"].append(error_rates(text, ev.pocketsphinx.transcribe(wav, sr)).cer)
                rows["speaker_similarity"].append(cosine_similarity(ev.speaker_encoder.embed(wav, sr), centroid))
                rows["dnsmos_ovrl"].append(ev.dnsmos.score(wav, sr).ovrl)
                rows["mcd_db"].append(reference_distance(wav, sr, real, sr).mcd_db if name != "real" else 0.0)
                rows["energy_above_8k"].append(high_band_share(wav, sr))
            per[name] = rows
        res = {name: {k: round(float(np.nanmean(v)), 4) for k, v in rows.items()} for name, rows in per.items()}
        res["full_minus_8k"] = {k: paired_difference(per["f_max_11025"][k], per["f_max_8000"][k])
                                for k in per["real"] if k != "energy_above_8k"}
        out["voices"][voice] = res
    out["load_seconds"] = {k: round(x, 2) for k, x in ev.load_seconds.items()}
    out["wall_s"] = round(time.time() - t_all, 1)
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
