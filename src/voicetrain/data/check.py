"""``voicetrain check DATASET``: load every item once through the real training data loader.

Batches come from the same :class:`BucketBatchSampler`, :class:`TTSDataset` and
:func:`collate` that training uses, with the dataset's own symbol table, feature
statistics and speaker table, so an item that passes here loads in training too.
On top of that the prepared wav must exist, hold the manifest's duration, and the
feature file must hold the manifest's frame count. Every broken item is named
with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from voicetrain.data.manifest import PreparedDataset, Utterance

DURATION_TOLERANCE = 0.01
"""Seconds; the manifest rounds durations to 0.1 ms."""


@dataclass(frozen=True)
class BrokenItem:
    id: str
    split: str
    problem: str
    fix: str


@dataclass
class CheckReport:
    root: Path
    n_items: int = 0
    n_batches: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    broken: list[BrokenItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Dataset-level problems (missing symbols.json, unreadable manifest...)."""

    @property
    def ok(self) -> bool:
        return not self.broken and not self.problems

    def summary(self) -> str:
        lines = [f"{self.root}: {self.n_items} items in {self.n_batches} batches "
                 f"({', '.join(f'{k} {v}' for k, v in self.splits.items())})"]
        lines += [f"  dataset: {p}" for p in self.problems]
        lines += [f"  {b.split}/{b.id}: {b.problem} -> {b.fix}" for b in self.broken]
        lines.append("OK: every item loads" if self.ok else
                     f"BROKEN: {len(self.broken)} item(s), {len(self.problems)} dataset problem(s)")
        return "\n".join(lines)


def _rerun_fix(ds: PreparedDataset) -> str:
    src = ds.info.source or "INPUT"
    return f"re-run `voicetrain prepare {src} --out {ds.root}` (it redoes only what is missing or damaged)"


def _check_files(ds: PreparedDataset, u: Utterance, split: str, fix: str) -> BrokenItem | None:
    wav = ds.root / u.audio
    if not wav.is_file():
        return BrokenItem(u.id, split, f"prepared wav {wav} is missing", fix)
    try:
        info = sf.info(str(wav))
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types
        return BrokenItem(u.id, split, f"prepared wav {wav} cannot be read ({e})", f"delete it and {fix}")
    if info.samplerate != ds.info.audio.sample_rate:
        return BrokenItem(u.id, split, f"{wav} is {info.samplerate} Hz, dataset is {ds.info.audio.sample_rate} Hz",
                          f"delete it and {fix}")
    dur = info.frames / info.samplerate
    if abs(dur - u.duration) > DURATION_TOLERANCE:
        return BrokenItem(u.id, split, f"{wav} lasts {dur:.3f} s but the manifest says {u.duration:.3f} s",
                          f"delete it and {fix}")
    return None


def check_dataset(root: str | Path, batch_size: int = 16) -> CheckReport:
    """Check every item of a prepared dataset; see the module docstring."""
    from voicetrain.data.cache import FeatureStats
    from voicetrain.data.dataset import BucketBatchSampler, DataItemError, TTSDataset, collate
    from voicetrain.text.symbols import SymbolTable

    ds = PreparedDataset.open(root)
    report = CheckReport(ds.root)
    fix = _rerun_fix(ds)
    try:
        symbols = SymbolTable.load(ds.symbols_path)
    except (OSError, ValueError, KeyError) as e:
        report.problems.append(f"{ds.symbols_path} cannot be loaded ({e}); {fix}")
        return report
    try:
        stats = FeatureStats.load(ds.stats_path)
    except (OSError, ValueError, TypeError) as e:
        report.problems.append(f"{ds.stats_path} cannot be loaded ({e}); {fix}")
        return report
    speakers = {name: i for i, name in enumerate(ds.info.speakers)}
    seen: dict[str, str] = {}
    for split in ("train", "val"):
        try:
            utts = ds.manifest(split)
        except (OSError, ValueError) as e:
            report.problems.append(f"{split}.jsonl cannot be read ({e}); {fix}")
            continue
        report.splits[split] = len(utts)
        report.n_items += len(utts)
        for u in utts:
            if u.id in seen:
                report.broken.append(BrokenItem(u.id, split, f"id also in {seen[u.id]}.jsonl", fix))
            seen[u.id] = split
        if not utts:
            if split == "train":
                report.problems.append(f"train.jsonl is empty; {fix}")
            continue
        data = TTSDataset(ds, utts, symbols, stats, speakers)
        sampler = BucketBatchSampler(data.lengths, batch_size, shuffle=False)
        for batch_idx in sampler:
            items = []
            for i in batch_idx:
                u = utts[i]
                bad = _check_files(ds, u, split, fix)
                try:
                    item = data[i]
                except DataItemError as e:
                    report.broken.append(BrokenItem(u.id, split, str(e).removeprefix(f"{u.id}: "), fix))
                    continue
                if bad is None and item.mel.shape[1] != u.n_frames:
                    bad = BrokenItem(u.id, split, f"feature file {data.feature_path(u)} has {item.mel.shape[1]} "
                                     f"frames but the manifest says {u.n_frames}", f"delete it and {fix}")
                if bad is not None:
                    report.broken.append(bad)
                    continue
                items.append(item)
            if items:
                b = collate(items)
                report.n_batches += 1
                # padding must not have eaten any frames or tokens
                for k, it in enumerate(items):
                    if int(b.mel_lens[k]) != it.mel.shape[1] or int(b.token_lens[k]) != len(it.tokens):
                        report.broken.append(BrokenItem(it.id, split, "collate changed its lengths", "report a bug"))
    return report
