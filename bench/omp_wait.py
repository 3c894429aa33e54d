"""Training step time under OpenMP's wait policies (and precisions), quiet or beside other work; one JSON line.

torch's OpenMP threads spin while they wait for work unless OMP_WAIT_POLICY=PASSIVE. On a small machine shared
with anything else (here: ``--busy`` CPU-bound processes at nice 19, as a browser or a test suite would be) a
spinning thread holds a core the other work wanted, and the step waits for the one that lost it. Each
configuration runs in its own process (the policy is read when torch loads its OpenMP runtime); the
configurations alternate ``--rounds`` times and the median step of each is reported, with its ratio to the
default (unset) policy at the same thread count.

    .venv/bin/python bench/omp_wait.py [--threads 1,2] [--busy 0] [--rounds 3] [--precision bf16-mixed[,32-true]]
        [--policies default,PASSIVE,spin=10000]   (spin=N: GOMP_SPINCOUNT=N, libgomp's spin before it sleeps)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import itertools, json, sys, time, torch
from voicetrain.run_config import RunConfig
from voicetrain.training.train import prepare_run, make_loaders
from voicetrain.models.registry import build_model
torch.set_num_threads(int(sys.argv[2]))
bf16 = sys.argv[3] == "bf16-mixed"
ds, cfg, symbols, stats = prepare_run(sys.argv[1], sys.argv[4], RunConfig())
_, _, loader, _ = make_loaders(ds, cfg, symbols, stats)
batches = list(itertools.islice(iter(loader), 9))
torch.manual_seed(0)
m = build_model(cfg.model, cfg.model_config, len(symbols), cfg.audio.n_mels, 1).train()
m.set_training_step(1000)  # full dropout, as most of a run
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
times = []
for i, b in enumerate(batches):
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = m(b.tokens, b.token_lens, b.mels, b.mel_lens, b.pitch, b.voiced, b.energy, b.speakers)
        loss = m.loss(out, b.mels, b.mel_lens, b.token_lens, step=1000)["loss"]
    opt.zero_grad(); loss.backward(); opt.step()
    if i:
        times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound processes beside the steps")
    ap.add_argument("--busy-nice", type=int, default=19, help="their niceness (0: as a browser or an editor)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="bf16-mixed", help="one or several: bf16-mixed,32-true")
    ap.add_argument("--work", default="/tmp/voicetrain-bench")
    ap.add_argument("--policies", default="default,PASSIVE")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_demo import ensure_dataset

    ds = ensure_dataset(Path(args.work), 300)
    busy = [subprocess.Popen(["nice", "-n", str(args.busy_nice), sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    precisions = args.precision.split(",")
    configs = [(t, p, q) for t in (int(x) for x in args.threads.split(",")) for p in args.policies.split(",")
               for q in precisions]

    def key(t, p, q) -> str:
        return f"{t}:{p}" + (f":{q}" if len(precisions) > 1 else "")

    steps: dict[str, list[float]] = {key(*c): [] for c in configs}
    load_before = os.getloadavg()[0]
    try:
        time.sleep(2 if busy else 0)
        for _ in range(args.rounds):
            for t, p, q in configs:
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                env["OMP_NUM_THREADS"] = str(t)
                if p.startswith("spin="):
                    env["GOMP_SPINCOUNT"] = p.partition("=")[2]
                elif p != "default":
                    env["OMP_WAIT_POLICY"] = p
                out = subprocess.run([sys.executable, "-c", CHILD, str(ds), str(t), q,
                                      f"/tmp/omp-wait-{t}-{p}"], env=env, check=True, capture_output=True, text=True)
                steps[key(t, p, q)] += json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        for b in busy:
            b.kill()
    med = {k: round(statistics.median(v), 4) for k, v in steps.items()}
    ratio = {f"{key(t, p, q)}_vs_default": round(med[key(t, p, q)] / med[key(t, "default", q)], 3)
             for t, p, q in configs if p != "default" and key(t, "default", q) in med}
    if len(precisions) > 1:  # each precision against the first, same threads and policy
        ratio |= {f"{key(t, p, q)}_vs_{precisions[0]}": round(med[key(t, p, q)] / med[key(t, p, precisions[0])], 3)
                  for t, p, q in configs if q != precisions[0]}
    print(json.dumps({"bench": "omp_wait", "precision": args.precision, "busy_processes": args.busy, "busy_nice": args.busy_nice,
                      "median_s_per_step": med, "ratio": ratio, "steps_each": len(next(iter(steps.values()))),
                      "load_avg_before": round(load_before, 2), "machine": f"{os.cpu_count()} cpu"}))


if __name__ == "__main__":
    sys.exit(main())
