"""Keep a vocoder corpus's cleaner voices: a view of a prepared multi-speaker dataset without the speakers whose
recordings score low on DNSMOS.

    .venv/bin/python recipes/select_vocoder_voices.py DATASET --out DATASET_VIEW [--min-dnsmos 2.35] [--clips 5]

A vocoder learns to reproduce what it hears: buzzy synthetic voices (old diphone voices, some espeak-ng
variants) teach it their buzz. Each speaker's first ``--clips`` training clips are scored with DNSMOS P.835
(OVRL); speakers whose mean is under ``--min-dnsmos`` are left out. The view holds the filtered train.jsonl,
val.jsonl and dataset.yaml (speakers list); everything else (wavs, feature cache, stats) is a symlink to
DATASET, so the view costs no disk and DATASET is never modified. Prints one JSON line: every speaker's
score and which were kept.

The shipped vocoder's second training stage used `--min-dnsmos 2.35` on `demo-data --voices universal`
(recipes/vocoder_cpu.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("--out", required=True)
    ap.add_argument("--min-dnsmos", type=float, default=2.35)
    ap.add_argument("--clips", type=int, default=5, help="Training clips scored per speaker.")
    args = ap.parse_args(argv)

    import numpy as np
    import soundfile as sf
    import yaml

    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.evaluation.models import Dnsmos
    from voicetrain.fileio import atomic_write_text

    src, out = Path(args.dataset).resolve(), Path(args.out)
    ds = PreparedDataset.open(src)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} exists and is not empty; choose a new --out (nothing was written)")
    by_speaker: dict[str, list] = {}
    for u in ds.manifest("train"):
        by_speaker.setdefault(u.speaker, []).append(u)
    dnsmos = Dnsmos()
    scores = {}
    for spk, utts in sorted(by_speaker.items()):
        vals = []
        for u in utts[: args.clips]:
            audio, sr = sf.read(src / u.audio, dtype="float32")
            vals.append(dnsmos.score(audio, sr).ovrl)
        scores[spk] = round(float(np.mean(vals)), 3)
    kept = sorted(s for s, v in scores.items() if v >= args.min_dnsmos)
    if not kept:
        sys.exit(f"no speaker of {src} scores DNSMOS >= {args.min_dnsmos}; lower --min-dnsmos (nothing was written)")

    out.mkdir(parents=True, exist_ok=True)
    own = {"train.jsonl", "val.jsonl", "dataset.yaml"}
    for p in src.iterdir():
        if p.name not in own:
            (out / p.name).symlink_to(p)
    for split in ("train", "val"):
        lines = (src / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        atomic_write_text(out / f"{split}.jsonl",
                          "".join(ln + "\n" for ln in lines if ln.strip() and json.loads(ln)["speaker"] in kept))
    info = yaml.safe_load((src / "dataset.yaml").read_text(encoding="utf-8"))
    info["speakers"] = [s for s in info.get("speakers", []) if s in kept]
    atomic_write_text(out / "dataset.yaml", yaml.safe_dump(info, sort_keys=False, allow_unicode=True))
    PreparedDataset.open(out)  # the view opens as a dataset
    print(json.dumps({"dataset": str(src), "out": str(out), "min_dnsmos": args.min_dnsmos, "clips": args.clips,
                      "dnsmos": scores, "kept": kept, "dropped": sorted(set(scores) - set(kept))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
