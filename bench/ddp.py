"""One CPU process vs two DDP processes (Lightning, gloo) on the same run. Prints ONE JSON line.

A demo corpus (flite rms, ARCTIC prompts) is prepared once; `voicetrain train` then runs the same
steps with ``--devices 1`` and ``--devices 2`` (accelerator cpu, one torch thread per process, no
quality tracking). Per arm: wall time of the command, samples/s from result.json (steps x batch x
processes / fit wall time), and the peak of the summed RSS of the process tree (both ranks),
sampled every 0.2 s from /proc.

    .venv/bin/python bench/ddp.py [--preset cpu] [--steps 20] [--batch-size 8] [--utterances 40]

Two processes on two cores share the cores with each other (and with whatever else runs): expect no
speed-up here; the figure says what DDP costs where it cannot help.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

VOICETRAIN = str(Path(sys.executable).parent / "voicetrain")


def _tree_rss_mb(pid: int) -> float:
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def run_arm(dataset: Path, out: Path, devices: int, args) -> dict:
    cmd = [VOICETRAIN, "train", str(dataset), "--out", str(out), "--preset", args.preset, "--max-steps",
           str(args.steps), "--batch-size", str(args.batch_size), "--devices", str(devices), "--threads", "1",
           "--quality-sentences", "0", "--set", "train.accelerator=cpu", "--set", f"train.val_every_steps={args.steps}",
           "--set", f"train.checkpoint_every_steps={args.steps}", "--set", f"train.sample_every_steps={args.steps}"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0.0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
            time.sleep(0.2)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    log, _ = proc.communicate()
    w.join()
    if proc.returncode:
        raise SystemExit(f"devices={devices} failed:\n{log[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    return {"devices": devices, "wall_s": round(time.time() - t0, 1), "steps": result["steps"],
            "fit_s": round(result["wall_seconds"], 1), "samples_per_s": round(result["samples_per_second"], 2),
            "peak_tree_rss_mb": round(peak[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--utterances", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        tmp = Path(tmp)
        subprocess.run([VOICETRAIN, "demo-data", str(tmp / "corpus"), "--voices", "flite:rms", "--utterances",
                        str(args.utterances)], check=True, capture_output=True)
        subprocess.run([VOICETRAIN, "prepare", str(tmp / "corpus"), "--out", str(tmp / "ds"), "--workers", "1"],
                       check=True, capture_output=True)
        arms = [run_arm(tmp / "ds", tmp / f"run{d}", d, args) for d in (1, 2)]
    print(json.dumps({"bench": "ddp", "preset": args.preset, "batch_size": args.batch_size, "steps": args.steps,
                      "utterances": args.utterances, "arms": arms,
                      "speedup_2_vs_1": round(arms[1]["samples_per_s"] / arms[0]["samples_per_s"], 2)}))


if __name__ == "__main__":
    main()
