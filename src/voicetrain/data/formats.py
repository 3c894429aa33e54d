"""Readers for raw corpora: LJSpeech, VCTK/Coqui-like multi-speaker folders, and NAME.wav + NAME.txt pairs.

A reader only lists what the corpus holds (:class:`SourceItem` rows); it decodes
transcripts but never audio, and never writes anything. Problems it can see
without decoding audio (missing transcript or audio, undecodable text) are
recorded on the item as QC issues, so that ``prepare`` quarantines the item
with a reason instead of dropping it silently.

Transcript encodings: files are read as UTF-8 (a BOM is accepted, UTF-16 with a
BOM too). Text that is not UTF-8 is decoded as Windows-1252 (a superset of
Latin-1 for printable text, which is what Windows editors write for Western
languages) and kept with a ``transcript_not_utf8`` warning. Bytes that are not
valid cp1252 either, or that decode to control characters (a binary file, UTF-16
without a BOM), are not text we can trust: the item is quarantined as
``transcript_undecodable`` rather than trained on mojibake.
"""

from __future__ import annotations

import os

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from voicetrain.audio.io import AUDIO_EXTENSIONS
from voicetrain.data.qc import Issue, Reason

FORMATS = ("ljspeech", "vctk", "pairs")
_ID_SAFE_RE = re.compile(r"[^A-Za-z0-9_.-]+")
# VCTK 0.92 names audio p225_001_mic1.flac next to the transcript p225_001.txt.
_MIC_RE = re.compile(r"_mic([12])$")
_VCTK_AUDIO_DIRS = ("wav48_silence_trimmed", "wav48", "wav", "wavs", "audio", "flac")


class CorpusFormatError(ValueError):
    """INPUT is missing or its layout is not one voicetrain can read; the message says what was expected."""


@dataclass
class SourceItem:
    """One utterance of a raw corpus, before any audio is decoded."""

    id: str
    speaker: str
    audio: Path | None
    """None when the transcript names audio that does not exist."""
    text: str | None
    """None when the transcript is missing or undecodable."""
    issues: list[Issue] = field(default_factory=list)


@dataclass
class Corpus:
    root: Path
    format: str
    items: list[SourceItem]
    warnings: list[str] = field(default_factory=list)
    """Corpus-level notes (orphan transcripts, renamed ids) for the report."""


def resolve_inside(folder: str | os.PathLike, relative: str) -> Path | None:
    """``folder / relative`` when it stays inside ``folder`` (after resolving '..' and links), else None.

    Ids from user files (metadata.csv, a --text-file) name files inside one folder; an absolute id or one
    with '..' must not read or write anywhere else.
    """
    base = Path(folder).resolve()
    if not relative or Path(relative).is_absolute():
        return None
    target = (base / relative).resolve()
    return target if target == base or base in target.parents else None


def safe_name(name: str) -> str:
    """A file-system and manifest-safe id/speaker name (no separators, no '|')."""
    s = _ID_SAFE_RE.sub("_", unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()).strip("._")
    return s or "unnamed"


def decode_transcript(data: bytes, where: str) -> tuple[str | None, list[Issue]]:
    """Decode transcript bytes; see the module docstring for the policy."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), []
        except UnicodeDecodeError:
            pass
    try:
        text = data.decode("utf-8-sig")
        issues: list[Issue] = []
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            return None, [Issue(Reason.TRANSCRIPT_UNDECODABLE,
                                f"{where}: transcript is neither UTF-8 nor Windows-1252 text; "
                                "re-save it as UTF-8")]
        issues = [Issue(Reason.TRANSCRIPT_NOT_UTF8,
                        f"{where}: transcript is not UTF-8; decoded as Windows-1252 ({text.strip()[:40]!r}); "
                        "re-save it as UTF-8 if this looks wrong")]
    if any(unicodedata.category(c) == "Cc" and c not in "\t\r\n" for c in text):
        return None, [Issue(Reason.TRANSCRIPT_UNDECODABLE,
                            f"{where}: transcript holds control characters (binary data or UTF-16 without a BOM); "
                            "re-save it as UTF-8 text")]
    return text, issues


def _read_text_file(path: Path) -> tuple[str | None, list[Issue]]:
    text, issues = decode_transcript(path.read_bytes(), str(path))
    if text is not None:
        text = " ".join(text.split())
        if not text:
            issues.append(Issue(Reason.TRANSCRIPT_EMPTY, f"{path}: transcript is empty; write what is said in the audio"))
            text = None
    return text, issues


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                  and not p.name.startswith("."))


def _pick_by_stem(files: list[Path], warnings: list[str]) -> dict[str, Path]:
    """stem -> audio file; when one stem has several encodings, prefer lossless (wav > flac > ogg > mp3)."""
    out: dict[str, Path] = {}
    for p in sorted(files, key=lambda p: (p.stem, AUDIO_EXTENSIONS.index(p.suffix.lower()))):
        if p.stem in out:
            warnings.append(f"{p}: ignored, {out[p.stem].name} has the same name")
            continue
        out[p.stem] = p
    return out


def detect_format(root: Path) -> str:
    """Guess the layout of ``root``; raise :class:`CorpusFormatError` naming what was expected."""
    if not root.exists():
        raise CorpusFormatError(f"input {root} does not exist; pass a folder holding your recordings")
    if not root.is_dir():
        raise CorpusFormatError(f"input {root} is a file; pass the folder that holds it")
    if (root / "metadata.csv").is_file():
        return "ljspeech"
    if (root / "txt").is_dir() and any((root / d).is_dir() for d in _VCTK_AUDIO_DIRS):
        return "vctk"
    if _audio_files(root):
        return "pairs"
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if any(_audio_files(d) for d in subdirs):
        return "vctk"
    raise CorpusFormatError(
        f"cannot tell the layout of {root}: expected one of\n"
        f"  ljspeech: {root}/metadata.csv (id|text[|normalized]) and {root}/wavs/ID.wav\n"
        f"  vctk:     {root}/SPEAKER/NAME.wav + NAME.txt (or {root}/txt/SPEAKER/ and {root}/wav48/SPEAKER/)\n"
        f"  pairs:    {root}/NAME.wav + {root}/NAME.txt\n"
        f"audio may be {', '.join(AUDIO_EXTENSIONS)}; pass --format to choose explicitly"
    )


def read_ljspeech(root: Path, speaker: str | None = None) -> Corpus:
    """``metadata.csv`` with ``id|text[|normalized]`` rows and audio in ``wavs/`` (any supported extension).

    The raw text (column 2) is used: voicetrain's own normalizer expands it, so
    every corpus is normalized the same way.
    """
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise CorpusFormatError(f"{meta} does not exist; an LJSpeech corpus needs metadata.csv with id|text rows")
    speaker = safe_name(speaker or root.resolve().name)
    warnings: list[str] = []
    wav_dir = root / "wavs"
    audio_by_stem = _pick_by_stem(_audio_files(wav_dir), warnings) if wav_dir.is_dir() else {}
    text, file_issues = decode_transcript(meta.read_bytes(), str(meta))
    if text is None:
        raise CorpusFormatError(f"{meta} cannot be decoded as text ({file_issues[0].message}); re-save it as UTF-8")
    items: list[SourceItem] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("|")
        raw_id = cols[0].strip()
        if Path(raw_id).suffix.lower() in AUDIO_EXTENSIONS:  # some tools write "LJ001.wav|..."
            raw_id = raw_id[: -len(Path(raw_id).suffix)]
        if not raw_id:
            warnings.append(f"{meta}:{n}: line has no id; skipped")
            continue
        where = f"{meta}:{n}"
        # A prepared dataset's metadata.csv names SPEAKER/ID: accept nested ids too.
        audio = audio_by_stem.get(raw_id)
        escapes = audio is None and any(resolve_inside(wav_dir, f"{raw_id}{ext}") is None for ext in AUDIO_EXTENSIONS)
        if audio is None and not escapes:
            for ext in AUDIO_EXTENSIONS:
                cand = resolve_inside(wav_dir, f"{raw_id}{ext}")
                if cand is not None and cand.is_file():
                    audio = cand
                    break
        uid = safe_name(raw_id)
        if uid in seen:
            warnings.append(f"{where}: id {raw_id!r} repeats an earlier line; skipped")
            continue
        seen.add(uid)
        issues = [Issue(i.code, f"{where}: metadata.csv is not UTF-8, decoded as Windows-1252") for i in file_issues]
        utt_text = " ".join(cols[1].split()) if len(cols) > 1 else ""
        if not utt_text:
            issues.append(Issue(Reason.TRANSCRIPT_EMPTY, f"{where}: id {raw_id!r} has no text; fill in column 2"))
        if escapes:
            issues.append(Issue(Reason.AUDIO_MISSING,
                                f"{where}: id {raw_id!r} points outside {wav_dir}; an id names a file inside wavs/ "
                                "(no absolute paths, no '..'): fix the id or delete the line"))
        elif audio is None:
            issues.append(Issue(Reason.AUDIO_MISSING,
                                f"{where}: no audio {wav_dir}/{raw_id}.wav (or .flac/.ogg/.mp3); add it or delete the line"))
        items.append(SourceItem(uid, speaker, audio, utt_text or None, issues))
    listed = {it.audio for it in items if it.audio is not None}
    orphans = [p for p in audio_by_stem.values() if p not in listed]
    if orphans:
        warnings.append(f"{len(orphans)} audio file(s) in {wav_dir} are not in metadata.csv and were ignored "
                        f"(e.g. {orphans[0].name})")
    return Corpus(root, "ljspeech", items, warnings)


def _pair_items(audio_dir: Path, text_dir: Path, speaker: str, id_prefix: str, warnings: list[str]) -> list[SourceItem]:
    """Items for audio files in ``audio_dir`` with transcripts ``text_dir/STEM.txt``."""
    items = []
    audio_by_stem = _pick_by_stem(_audio_files(audio_dir), warnings)
    # VCTK 0.92 has two microphones per utterance; keep mic1 and ignore mic2 duplicates.
    stems: dict[str, Path] = {}
    for stem, p in audio_by_stem.items():
        m = _MIC_RE.search(stem)
        base = stem[: m.start()] if m else stem
        if base in stems and m and m.group(1) == "2":
            continue
        stems[base] = p
    for base, audio in sorted(stems.items()):
        txt = text_dir / f"{base}.txt"
        uid = safe_name(base if not id_prefix or base.startswith(id_prefix) else f"{id_prefix}_{base}")
        if txt.is_file():
            text, issues = _read_text_file(txt)
        else:
            text, issues = None, [Issue(Reason.TRANSCRIPT_MISSING,
                                        f"{audio}: no transcript {txt}; write what is said into it")]
        items.append(SourceItem(uid, speaker, audio, text, issues))
    return items


def read_pairs(root: Path, speaker: str | None = None) -> Corpus:
    """A folder of ``NAME.wav`` + ``NAME.txt`` pairs: one speaker, named after the folder."""
    if not root.is_dir():
        raise CorpusFormatError(f"input {root} is not a folder of NAME.wav + NAME.txt pairs")
    warnings: list[str] = []
    items = _pair_items(root, root, safe_name(speaker or root.resolve().name), "", warnings)
    if not items:
        raise CorpusFormatError(f"{root} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}); expected NAME.wav + NAME.txt")
    return Corpus(root, "pairs", items, warnings)


def read_vctk(root: Path) -> Corpus:
    """One folder per speaker with audio and same-named .txt transcripts, or VCTK's ``txt/`` + ``wav48/`` split.

    Ids are prefixed with the speaker name unless the file name already starts with it
    (VCTK's p225_001), so ids are unique across speakers.
    """
    warnings: list[str] = []
    items: list[SourceItem] = []
    audio_root = next((root / d for d in _VCTK_AUDIO_DIRS if (root / d).is_dir()), None)
    if (root / "txt").is_dir() and audio_root is not None:
        for spk_dir in sorted(d for d in audio_root.iterdir() if d.is_dir()):
            spk = safe_name(spk_dir.name)
            items += _pair_items(spk_dir, root / "txt" / spk_dir.name, spk, spk, warnings)
    else:
        for spk_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
            spk = safe_name(spk_dir.name)
            items += _pair_items(spk_dir, spk_dir, spk, spk, warnings)
    if not items:
        raise CorpusFormatError(f"{root} has no SPEAKER/ folders holding audio; expected {root}/SPEAKER/NAME.wav + NAME.txt")
    return Corpus(root, "vctk", items, warnings)


def read_corpus(root: str | Path, fmt: str = "auto") -> Corpus:
    """Read ``root`` in format ``fmt`` ('auto' detects it). Ids are made unique across the corpus."""
    root = Path(root)
    if fmt == "auto":
        fmt = detect_format(root)
    elif fmt not in FORMATS:
        raise CorpusFormatError(f"unknown --format {fmt!r}; use auto, {', '.join(FORMATS)}")
    elif not root.is_dir():
        detect_format(root)  # raises the right message for a missing path or a file
    corpus = {"ljspeech": read_ljspeech, "vctk": read_vctk, "pairs": read_pairs}[fmt](root)
    taken: set[str] = set()
    for it in corpus.items:
        if it.id in taken:
            n = 2
            while f"{it.id}_{n}" in taken:
                n += 1
            corpus.warnings.append(f"id {it.id!r} occurs more than once; {it.audio} renamed to '{it.id}_{n}'")
            it.id = f"{it.id}_{n}"
        taken.add(it.id)
    return corpus
