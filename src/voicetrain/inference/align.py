"""Phoneme alignments from a trained model's aligner: JSON and Praat TextGrid per utterance."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from voicetrain.data.dataset import BucketBatchSampler, TTSDataset, collate
from voicetrain.data.manifest import PreparedDataset
from voicetrain.fileio import atomic_write_json, atomic_write_text
from voicetrain.inference.checkpoint import find_checkpoint, load_model


def textgrid(phones: list[str], starts: list[float], ends: list[float], total: float) -> str:
    """A Praat TextGrid (long format) with one interval tier named 'phones'."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {total:.4f}",
             "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
             '        name = "phones"', "        xmin = 0", f"        xmax = {total:.4f}",
             f"        intervals: size = {len(phones)}"]
    for i, (p, s, e) in enumerate(zip(phones, starts, ends), 1):
        label = "" if p == " " else p.replace('"', '""')
        lines += [f"        intervals [{i}]:", f"            xmin = {s:.4f}", f"            xmax = {e:.4f}",
                  f'            text = "{label}"']
    return "\n".join(lines) + "\n"


def align_dataset(run: str | os.PathLike, dataset: str | os.PathLike, out: str | os.PathLike,
                  which: str = "best", split: str = "all", batch_size: int = 8) -> int:
    loaded = load_model(find_checkpoint(run, which))
    if not hasattr(loaded.model, "align"):
        raise ValueError(f"model {loaded.voice.model} has no aligner")
    ds = PreparedDataset.open(dataset)
    utts = []
    for s in (("train", "val") if split == "all" else (split,)):
        utts += ds.manifest(s)
    speakers = {s: i for i, s in enumerate(loaded.voice.speakers)}
    unknown = sorted({u.speaker for u in utts} - set(speakers))
    if unknown:
        raise ValueError(f"speakers {unknown} are not in this voice's speaker table {sorted(speakers)}")
    data = TTSDataset(ds, utts, loaded.symbols, loaded.stats, speakers)
    fps = loaded.voice.audio.frames_per_second
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with torch.inference_mode():
        for idx in BucketBatchSampler(data.lengths, batch_size, shuffle=False):
            b = collate([data[i] for i in idx])
            durs = loaded.model.align(b.tokens, b.token_lens, b.mels, b.mel_lens, b.speakers)
            for k, i in enumerate(idx):
                u = data.utts[i]
                L = int(b.token_lens[k])
                d = durs[k, :L].tolist()
                phones = [loaded.symbols.symbols[t] for t in b.tokens[k, :L].tolist()]
                starts, ends, t = [], [], 0
                for f in d:
                    starts.append(t / fps)
                    t += f
                    ends.append(t / fps)
                total = int(b.mel_lens[k]) / fps
                rows = [{"phoneme": p, "start": round(s, 4), "end": round(e, 4), "frames": f}
                        for p, s, e, f in zip(phones, starts, ends, d)]
                atomic_write_json(out / f"{u.id}.json", {
                    "id": u.id, "speaker": u.speaker, "text": u.text, "phonemes": u.phonemes,
                    "frames_per_second": fps, "duration": total, "alignment": rows})
                atomic_write_text(out / f"{u.id}.TextGrid", textgrid(phones, starts, ends, total))
                n += 1
    return n
