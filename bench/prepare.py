"""Benchmark ``voicetrain prepare`` on 300 demo utterances; prints ONE JSON line.

    .venv/bin/python bench/prepare.py [--utterances 300] [--workers 2] [--work DIR]

The demo corpus (flite rms, ARCTIC prompts) is generated first, outside the timed
part, and kept in ``--work`` so repeated runs skip it. Other engineers share the 2 cores, so next to wall-clock figures it prints the
CPU seconds used (contention-independent) and the 1-minute load average. The timed part is one cold
``prepare`` into a fresh folder (worker start-up included), then a re-run that must
reuse everything.

Memory: ``resource.getrusage`` reports the peak RSS of this process and of the
largest *waited-for* child; prepare's workers are children of multiprocessing's
forkserver, which is only reaped when this process exits, so a sampler thread also
records the peak of the summed RSS (shared pages counted per process) and PSS
(shared pages split between processes: the real total) of this process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (torch in forked workers) counted once overall."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_rss_kb(root_pid: int) -> tuple[int, int]:
    """(summed VmRSS, summed Pss) in kB of ``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        pid, ppid = int(d), int(fields["PPid"].strip())
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total = pss = 0
    stack = [root_pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        pss += _pss_kb(p)
        stack += children.get(p, [])
    return total, pss


def _descendants(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, stack = [], list(children.get(root_pid, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack += children.get(p, [])
    return out


def cpu_seconds() -> float:
    """CPU time of this process, its reaped children, and its live descendants with *their* reaped children.

    prepare's workers are reaped by the forkserver (a live child of ours), so they
    show up in its cutime/cstime.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(getattr(resource.getrusage(w), a) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                for a in ("ru_utime", "ru_stime"))
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
    return total


class TreeRssSampler(threading.Thread):
    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss, pss = _tree_rss_kb(os.getpid())
            self.peak_kb = max(self.peak_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak_kb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "voicetrain-bench-prepare")
    args = ap.parse_args()

    from voicetrain.data.demo import make_demo_corpus
    from voicetrain.data.prepare import PrepareConfig, prepare

    corpus = args.work / f"corpus_rms_{args.utterances}"
    make_demo_corpus(corpus, ["flite:rms"], utterances=args.utterances, seed=0)
    out = args.work / "dataset"
    shutil.rmtree(out, ignore_errors=True)

    cfg = PrepareConfig(input=str(corpus), out=str(out), workers=args.workers)
    sampler = TreeRssSampler()
    sampler.start()
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    result = prepare(cfg)
    wall = time.perf_counter() - t0
    time.sleep(0.3)  # let the forkserver reap the workers so their CPU time is counted
    cpu = cpu_seconds() - cpu0
    t1 = time.perf_counter()
    rerun = prepare(cfg)
    rerun_wall = time.perf_counter() - t1
    tree_peak_kb = sampler.stop()

    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({
        "bench": "prepare",
        "utterances": result.n_items,
        "kept": result.n_kept,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "audio_seconds": round(result.audio_seconds, 1),
        "wall_seconds": round(wall, 2),
        "utterances_per_second": round(result.n_items / wall, 1),
        "x_real_time": round(result.audio_seconds / wall, 1),
        "stage_seconds": result.stage_seconds,
        "cpu_seconds": round(cpu, 2),
        "x_real_time_per_cpu_second": round(result.audio_seconds / cpu, 1),
        "rerun_wall_seconds": round(rerun_wall, 2),
        "rerun_reused": rerun.n_reused,
        "peak_rss_mb_self": round(self_kb / 1024, 1),
        "peak_rss_mb_children": round(child_kb / 1024, 1),
        "peak_rss_mb_process_tree": round(tree_peak_kb / 1024, 1),
        "peak_pss_mb_process_tree": round(sampler.peak_pss_kb / 1024, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
