"""Training-step speed of one registered model on synthetic batches; prints one JSON line.

Measures forward + loss + backward + AdamW step (what one training step costs, without
data loading or Lightning) on a batch shaped like ~3 s utterances: 86 frames/s at
22.05 kHz / hop 256, ~16 phoneme symbols per second, lengths varying by ±10%.

    .venv/bin/python bench/model_speed.py --model tacotron2 --preset cpu --threads 1 [--set postnet_dim=128]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch

from voicetrain.models.registry import MODELS, build_model, model_config


def synthetic_batch(batch: int, seconds: float, n_mels: int, n_symbols: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    scale = 0.9 + 0.2 * torch.rand(batch, generator=g)
    mel_lens = (scale * seconds * 86).long()
    token_lens = (scale * seconds * 16).long()
    T, L = int(mel_lens.max()), int(token_lens.max())
    tokens = torch.randint(1, n_symbols, (batch, L), generator=g)
    tokens[torch.arange(L)[None, :] >= token_lens[:, None]] = 0
    mels = torch.randn(batch, n_mels, T, generator=g).cumsum(-1) / 10
    mels = mels * (torch.arange(T)[None, None, :] < mel_lens[:, None, None])
    return dict(tokens=tokens, token_lens=token_lens, mels=mels, mel_lens=mel_lens,
                pitch=torch.randn(batch, T, generator=g), voiced=torch.rand(batch, T, generator=g) > 0.3,
                energy=torch.randn(batch, T, generator=g), speakers=torch.zeros(batch, dtype=torch.long))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tacotron2", choices=sorted(MODELS))
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0, help="mean utterance length")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a model config field, e.g. --set postnet_dim=128 (repeatable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_mels, n_symbols = 80, 100
    def parse(v: str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:  # a bare word is a string: --set decoder_type=conv
            return v

    overrides = {k: parse(v) for k, v in (o.split("=", 1) for o in args.set)}
    model = build_model(args.model, model_config(args.model, args.preset, overrides), n_symbols, n_mels, 1).train()
    b = synthetic_batch(args.batch_size, args.seconds, n_mels, n_symbols)
    opt = torch.optim.AdamW(model.parameters(), 1e-4, fused=True)

    def step(i: int) -> None:
        out = model(**b)
        loss = model.loss(out, b["mels"], b["mel_lens"], b["token_lens"], step=i)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(0)  # one-off allocation costs
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        step(i + 1)
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]  # median: robust to a noisy shared machine
    result = {"model": args.model, "preset": args.preset, "overrides": overrides, "threads": args.threads, "batch_size": args.batch_size,
              "mean_seconds": args.seconds, "frames": int(b["mels"].shape[2]), "tokens": int(b["tokens"].shape[1]),
              "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
              "seconds_per_step": round(sec, 3), "samples_per_second": round(args.batch_size / sec, 2),
              "min_seconds_per_step": round(min(times), 3),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
