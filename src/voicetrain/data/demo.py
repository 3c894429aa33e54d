"""``voicetrain demo-data``: a synthetic corpus spoken by espeak-ng, flite and festival from the CMU ARCTIC prompts.

One voice gives an LJSpeech folder (metadata.csv ``id|text|text`` + wavs/); several
voices give a VCTK-like folder (OUT/SPEAKER/ID.wav + ID.txt). Audio is written at
each engine's own rate (flite 16 kHz, espeak-ng 22.05 kHz): resampling is
``prepare``'s job, exactly as with real recordings.

Voice specs: ``flite:NAME`` (rms, awb, kal16, slt, ...),
``espeak:VOICE[:pPITCH][:sSPEED]`` (e.g. ``espeak:en-us+f2:p60:s150``) and
``festival:NAME`` (a festival voice, e.g. ``festival:kal_diphone``; ``text2wave``
speaks it), each optionally followed by ``@CENTS``: the same voice shifted by sox
``pitch`` (which moves F0 and formants together), a new speaker (e.g.
``flite:rms@+500``). Or a preset name (``single``, ``multi``, ``universal``, ``base``).
Every slt voice is kept out of every preset: slt is the held-out voice of the
benchmarks; name it explicitly to use it.
"""

from __future__ import annotations

import json
import os
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from voicetrain.data.formats import safe_name
from voicetrain.fileio import atomic_path, atomic_write_json, atomic_write_text

PRESETS: dict[str, tuple[str, ...]] = {
    "single": ("flite:rms",),
    # Different engines, variants, pitches and rates: 9 voices a speaker encoder tells apart.
    "multi": (
        "espeak:en-us+m3:p50:s160",
        "espeak:en-us+f2:p60:s150",
        "espeak:en-us+m1:p35:s170",
        "espeak:en-us+f4:p75:s140",
        "espeak:en+klatt:p45:s155",
        "espeak:en-us+klatt2:p55:s165",
        "flite:awb",
        "flite:kal16",
        "flite:rms",
    ),
    # The universal vocoder's corpus: every distinct voice this machine's synthesizers give. A vocoder does
    # not care about language, so the non-English festival voices bring the female timbres English lacks
    # here (lp, suo_fi_lj, czech_dita, upc_ca_ona); sox pitch-shifted copies widen the F0 and formant range.
    "universal": (
        "espeak:en-us+m3:p50:s160", "espeak:en-us+f2:p60:s150", "espeak:en-us+m1:p35:s170",
        "espeak:en-us+f4:p75:s140", "espeak:en+klatt:p45:s155", "espeak:en-us+klatt2:p55:s165",
        "espeak:en-us+f1:p70:s150", "espeak:en-gb+f3:p80:s145",
        "flite:awb", "flite:kal16", "flite:rms",
        "festival:kal_diphone", "festival:ked_diphone",
        "festival:lp_diphone", "festival:pc_diphone", "festival:suo_fi_lj_diphone", "festival:hy_fi_mv_diphone",
        "festival:czech_dita", "festival:upc_ca_ona_hts",
        "flite:rms@+500", "flite:awb@+600", "flite:kal16@+400", "festival:ked_diphone@+500",
        "festival:lp_diphone@-300", "festival:upc_ca_ona_hts@+300", "festival:czech_dita@-250",
    ),
    # The shipped base acoustic model's corpus: English voices only (an acoustic model learns a language's
    # phonemes), as many distinct ones as the synthesizers give, plus sox pitch-shifted copies as extra
    # speakers. flite rms (the demo voice) is kept out so that `make demo` is a real new-voice fine-tune.
    "base": (
        "espeak:en-us+m3:p50:s160", "espeak:en-us+f2:p60:s150", "espeak:en-us+m1:p35:s170",
        "espeak:en-us+f4:p75:s140", "espeak:en+klatt:p45:s155", "espeak:en-us+klatt2:p55:s165",
        "espeak:en-us+f1:p70:s150", "espeak:en-gb+f3:p80:s145", "espeak:en-gb-x-rp+m2:p40:s150",
        "espeak:en-gb-scotland+m7:p50:s150", "espeak:en-us+Annie:p65:s155", "espeak:en-us+klatt4:p50:s150",
        "espeak:en-gb-x-gbclan+f5:p70:s150",
        "flite:awb", "flite:kal16", "festival:kal_diphone", "festival:ked_diphone",
        "flite:awb@+400", "flite:awb@-200", "flite:kal16@+600", "festival:ked_diphone@+500",
        "festival:kal_diphone@+700",
    ),
}
HELD_OUT = "flite:slt"
MARKER = ".voicetrain-demo.json"


class DemoError(RuntimeError):
    """The demo corpus cannot be generated; the message names the cause and the fix."""


@dataclass(frozen=True)
class VoiceSpec:
    engine: str
    """'flite', 'espeak' or 'festival'."""
    voice: str
    pitch: int | None = None
    speed: int | None = None
    shift_cents: int | None = None
    """sox ``pitch`` shift applied after synthesis (F0 and formants move together): a new speaker."""

    @property
    def name(self) -> str:
        """Speaker name and folder: e.g. flite_rms, espeak_en-us_f2_p60_s150."""
        parts = [self.engine, self.voice.replace("+", "_")]
        if self.pitch is not None:
            parts.append(f"p{self.pitch}")
        if self.speed is not None:
            parts.append(f"s{self.speed}")
        if self.shift_cents is not None:
            parts.append(f"shift{'up' if self.shift_cents > 0 else 'down'}{abs(self.shift_cents)}")
        return safe_name("_".join(parts))

    @property
    def spec(self) -> str:
        extra = (f":p{self.pitch}" if self.pitch is not None else "") + (f":s{self.speed}" if self.speed is not None else "")
        shift = f"@{self.shift_cents:+d}" if self.shift_cents is not None else ""
        return f"{self.engine}:{self.voice}{extra}{shift}"

    def command(self, text: str, out: str) -> tuple[list[str], str | None]:
        """(argv, stdin) that writes ``text`` spoken to wav ``out``."""
        if self.engine == "flite":
            return ["flite", "-voice", self.voice, "-t", text, "-o", out], None
        if self.engine == "festival":
            # text on stdin, as for espeak-ng; the voice is selected by its festival function
            return ["text2wave", "-eval", f"(voice_{self.voice})", "-o", out], text
        argv = ["espeak-ng", "-v", self.voice, "-w", out]
        if self.pitch is not None:
            argv += ["-p", str(self.pitch)]
        if self.speed is not None:
            argv += ["-s", str(self.speed)]
        # Text through stdin: a prompt starting with '-' must not be read as an option.
        return argv + ["--stdin"], text


def parse_voice(spec: str) -> VoiceSpec:
    base, at, shift_text = spec.strip().partition("@")
    shift = None
    if at:
        try:
            shift = int(shift_text)
        except ValueError:
            raise DemoError(f"bad pitch shift {shift_text!r} in voice spec {spec!r}; use @CENTS, e.g. flite:rms@+500") from None
        if not shift or abs(shift) > 1200:
            raise DemoError(f"pitch shift {shift} in voice spec {spec!r}: use a non-zero shift within ±1200 cents")
    parts = base.split(":")
    engine = {"flite": "flite", "espeak": "espeak", "espeak-ng": "espeak", "festival": "festival"}.get(parts[0])
    if engine is None or len(parts) < 2 or not parts[1]:
        raise DemoError(f"bad voice spec {spec!r}; use flite:NAME (e.g. flite:rms), "
                        f"espeak:VOICE[:pPITCH][:sSPEED] (e.g. espeak:en-us+f2:p60:s150) or festival:NAME "
                        f"(e.g. festival:kal_diphone), each optionally @CENTS, or a preset: {', '.join(PRESETS)}")
    pitch = speed = None
    for p in parts[2:]:
        try:
            if p[:1] == "p":
                pitch = int(p[1:])
                continue
            if p[:1] == "s":
                speed = int(p[1:])
                continue
        except ValueError:
            pass
        raise DemoError(f"bad option {p!r} in voice spec {spec!r}; use pNN for pitch (0-99) or sNNN for speed (words/min)")
    if engine != "espeak" and (pitch is not None or speed is not None):
        raise DemoError(f"voice spec {spec!r}: pitch/speed options are for espeak voices only (shift any voice "
                        "with @CENTS)")
    return VoiceSpec(engine, parts[1], pitch, speed, shift)


def expand_voices(voices: list[str] | None) -> list[VoiceSpec]:
    """Preset names and comma-separated specs -> unique voice specs in order."""
    specs: list[str] = []
    for v in voices or ["single"]:
        for s in v.split(","):
            s = s.strip()
            if s:
                specs += PRESETS.get(s, (s,))
    out: list[VoiceSpec] = []
    for s in specs:
        vs = parse_voice(s)
        if vs.name not in {o.name for o in out}:
            out.append(vs)
    if not out:
        raise DemoError("no voices given; use e.g. --voices flite:rms or --voices multi")
    return out


def load_prompts(name: str = "arctic_prompts.tsv") -> list[tuple[str, str]]:
    """(id, text) rows of a prompt list shipped in the package."""
    text = resources.files("voicetrain.data").joinpath("prompts", name).read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        if line.strip():
            pid, _, sentence = line.partition("\t")
            rows.append((pid.strip(), sentence.strip()))
    return rows


def choose_prompts(prompts: list[tuple[str, str]], n: int, seed: int, voice: VoiceSpec) -> list[tuple[str, str]]:
    """``n`` prompts for ``voice``, chosen by seed and voice name (adding a voice never changes the others')."""
    rng = np.random.default_rng([seed, zlib.crc32(voice.name.encode())])
    idx = sorted(rng.choice(len(prompts), size=n, replace=False).tolist())
    return [prompts[i] for i in idx]


@dataclass(frozen=True)
class DemoResult:
    out: Path
    layout: str
    """'ljspeech' or 'vctk'."""
    speakers: list[str]
    n_utterances: int
    n_synthesized: int


def _shift_pitch(path: str, cents: int) -> None:
    """Shift ``path`` in place by ``cents`` with sox ``pitch`` (-R: no random dither, reproducible)."""
    shifted = path + ".shift.wav"
    try:
        try:
            proc = subprocess.run(["sox", "-R", path, shifted, "pitch", str(cents)], capture_output=True, text=True,
                                  timeout=120)
        except FileNotFoundError:
            raise DemoError("sox is not installed; install it with `apt-get install sox`") from None
        if proc.returncode != 0:
            raise DemoError(f"sox pitch {cents} failed on {path}: {proc.stderr.strip()[:200]}")
        os.replace(shifted, path)
    finally:
        if os.path.exists(shifted):
            os.unlink(shifted)


def _synthesize(voice: VoiceSpec, text: str, out: Path) -> None:
    """Write ``out`` atomically: a killed run leaves no half-written wav that a re-run would keep."""
    if out.exists() and out.stat().st_size > 44:
        return
    with atomic_path(out, suffix=".wav") as path:
        tmp = str(path)
        argv, stdin = voice.command(text, tmp)
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise DemoError(f"{argv[0]} is not installed; install it with `apt-get install {argv[0]}`") from None
        if proc.returncode != 0 or os.path.getsize(tmp) <= 44:
            raise DemoError(f"{voice.spec}: {argv[0]} failed on {text[:40]!r} "
                            f"(exit {proc.returncode}: {proc.stderr.strip()[:200]}); check the voice name "
                            f"(`flite -lv`, `espeak-ng --voices`, festival: ls /usr/share/festival/voices/*)")
        if voice.shift_cents is not None:
            _shift_pitch(tmp, voice.shift_cents)


def make_demo_corpus(out: str | os.PathLike, voices: list[str] | None = None, utterances: int = 50,
                     seed: int = 0, workers: int = 2) -> DemoResult:
    """Synthesize ``utterances`` ARCTIC prompts per voice into ``out``; see the module docstring.

    Re-running with the same arguments only fills in what is missing; other
    arguments on the same folder are refused (the corpus would mix two selections).
    """
    out = Path(out)
    specs = expand_voices(voices)
    prompts = load_prompts()
    if not 1 <= utterances <= len(prompts):
        raise DemoError(f"--utterances must be between 1 and {len(prompts)} (the ARCTIC prompt count), got {utterances}")
    params = {"voices": [v.spec for v in specs], "utterances": utterances, "seed": seed}
    if out.exists():
        if not out.is_dir():
            raise DemoError(f"{out} is a file; pass a folder for the demo corpus")
        marker = out / MARKER
        if marker.exists():
            old = json.loads(marker.read_text())
            if old != params:
                raise DemoError(f"{out} holds a demo corpus made with {old}; pass another folder or delete it")
        elif any(out.iterdir()):
            raise DemoError(f"{out} is a non-empty folder; pass a new or empty folder for the demo corpus")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MARKER, params, indent=None)

    single = len(specs) == 1
    tasks: list[tuple[VoiceSpec, str, Path]] = []
    meta_lines: list[str] = []
    for v in specs:
        chosen = choose_prompts(prompts, utterances, seed, v)
        folder = out / "wavs" if single else out / v.name
        folder.mkdir(parents=True, exist_ok=True)
        for pid, text in chosen:
            tasks.append((v, text, folder / f"{pid}.wav"))
            if single:
                clean = " ".join(text.replace("|", " ").split())
                meta_lines.append(f"{pid}|{clean}|{clean}")
            else:
                atomic_write_text(folder / f"{pid}.txt", text + "\n")
    n_new = sum(1 for _, _, p in tasks if not p.exists())
    # Subprocesses release the GIL: two threads keep both cores busy.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(lambda t: _synthesize(*t), tasks))
    if single:
        atomic_write_text(out / "metadata.csv", "\n".join(meta_lines) + "\n")
    return DemoResult(out, "ljspeech" if single else "vctk", [v.name for v in specs], len(tasks), n_new)


__all__ = ["VoiceSpec", "parse_voice", "expand_voices", "make_demo_corpus", "DemoResult", "DemoError", "PRESETS",
           "load_prompts", "choose_prompts", "HELD_OUT"]
