"""Run INSIDE the peer's venv: Piper's own trainer (``python -m piper.train fit``) plus wall-clock snapshots.

    PEER_VENV/bin/python bench/peer/piper_fit.py --snapshots DIR --marks 1,3 --progress P.json \
        --threads 1 fit --data.csv_path ... (every other argument goes to Piper's LightningCLI)
    PEER_VENV/bin/python bench/peer/piper_fit.py --prepare-only ... fit --data.* ...

It builds Piper's ``VitsLightningCLI`` exactly as ``piper.train.__main__.main`` does (same model,
data module, trainer defaults and checkpoint callbacks) and adds one callback that mirrors
voicetrain's ``TimeSnapshots``: a weights-only checkpoint when training wall time (from
``on_train_start``, as Lightning's ``max_time`` counts) passes each mark, and a progress file with
the batches trained, the training seconds and the peak RSS. ``--prepare-only`` runs the data
module's ``prepare_data`` (phonemes, silence trimming, spectrograms into ``--data.cache_dir``) and
stops, so the timed run starts from a warm cache as voicetrain's does from a prepared dataset.

Not imported by voicetrain or its tests: it needs piper-tts[train].
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import lightning as L
import torch


class WallClockSnapshots(L.Callback):
    def __init__(self, out: Path, marks: list[float], progress: Path):
        self.out, self.marks, self.progress = out, sorted(marks), progress
        self.start = time.time()
        self.batches = 0
        self.saved: list[dict] = []
        self.fit_seconds: float | None = None
        self.params: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.time()
        self.params = sum(p.numel() for p in pl_module.model_g.parameters())  # the generator: what inference runs

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        elapsed = (time.time() - self.start) / 60
        while self.marks and elapsed >= self.marks[0]:
            m = self.marks.pop(0)
            path = self.out / f"time={m:g}min-batch={self.batches}.ckpt"
            trainer.save_checkpoint(path, weights_only=True)  # keeps hparams: export_onnx can load it
            self.saved.append({"minutes": m, "batches": self.batches, "elapsed_s": round(elapsed * 60, 1),
                               "checkpoint": str(path)})
            self._write(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        # Lightning's Timer and this callback read the clock at the same batch end, a hair apart: when the
        # time limit stopped the run just before a mark, the weights it ends with are that mark's
        elapsed = time.time() - self.start
        for m in self.marks:
            path = self.out / f"time={m:g}min-batch={self.batches}.ckpt"
            trainer.save_checkpoint(path, weights_only=True)
            self.saved.append({"minutes": m, "batches": self.batches, "elapsed_s": round(elapsed, 1),
                               "checkpoint": str(path), "at_train_end": True})
        self.marks = []
        self._write(trainer)

    def _write(self, trainer) -> None:
        self.progress.write_text(json.dumps({
            "batches": self.batches, "train_seconds": round(time.time() - self.start, 2),
            "fit_seconds": None if self.fit_seconds is None else round(self.fit_seconds, 2),
            "global_step": trainer.global_step, "params": self.params, "epochs": trainer.current_epoch,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "snapshots": self.saved}))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapshots", type=Path)
    ap.add_argument("--marks", default="")
    ap.add_argument("--progress", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prepare-only", action="store_true")
    ours, rest = ap.parse_known_args(argv)
    torch.set_num_threads(ours.threads)

    # the same imports and construction as piper.train.__main__.main
    from piper.train.__main__ import _DEFAULT_CALLBACKS, VitsLightningCLI
    from piper.train.vits.dataset import VitsDataModule
    from piper.train.vits.lightning import VitsModel

    logging.basicConfig(level=logging.INFO)
    if ours.prepare_only:
        cli = VitsLightningCLI(VitsModel, VitsDataModule, run=False, args=[a for a in rest if a != "fit"],
                               trainer_defaults={"max_epochs": -1})
        cli.datamodule.prepare_data()
        return
    callbacks = list(_DEFAULT_CALLBACKS)
    if "--model.mos_metric" in rest and rest[rest.index("--model.mos_metric") + 1].lower() == "none":
        # piper-tts 1.8.0 trap: its second default ModelCheckpoint monitors val_mos, which is never logged
        # without the MOS predictor (disabled, or its torch.hub download failed offline), and Lightning then
        # raises MisconfigurationException at the end of the first epoch. Keep the val_mel/last one.
        callbacks = [c for c in callbacks if getattr(c, "monitor", None) != "val_mos"]
    snap = None
    if ours.snapshots is not None:
        ours.snapshots.mkdir(parents=True, exist_ok=True)
        snap = WallClockSnapshots(ours.snapshots, [float(m) for m in ours.marks.split(",") if m], ours.progress)
        callbacks.append(snap)
    # run=False and our own trainer.fit call (what LightningCLI's `fit` subcommand does) so that the
    # wall time is taken around trainer.fit, as voicetrain.training.loop.fit takes its own
    cli = VitsLightningCLI(VitsModel, VitsDataModule, run=False, args=[a for a in rest if a != "fit"],
                           trainer_defaults={"max_epochs": -1, "callbacks": callbacks})
    start = time.time()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if snap is not None:
        snap.fit_seconds = time.time() - start
        snap._write(cli.trainer)

if __name__ == "__main__":
    main()
