"""The studio's project folder: prompts, takes, their verdicts, the dataset, runs and voices.

Layout (every write atomic, through :mod:`voicetrain.fileio`)::

    PROJECT/project.json        {"speaker": NAME, "prompts": "arctic" | "prompts.tsv"}
    PROJECT/prompts.tsv         the user's own prompt list (id<TAB>text), when one was given
    PROJECT/takes/ID.wav        one take per prompt, exactly the bytes the browser sent
    PROJECT/takes/ID.txt        its prompt text: takes/ is a NAME.wav + NAME.txt folder that
                                `voicetrain prepare PROJECT/takes --out DATASET` reads as it is
    PROJECT/checks/ID.json      the take's verdict (QC + Whisper), written after the take
    PROJECT/corpus/SPEAKER/     the takes training uses (hard links to the good ones), rebuilt per run
    PROJECT/dataset/            `voicetrain prepare` output
    PROJECT/runs/NAME/          `voicetrain train` / `finetune` runs, each with studio_job.json
    PROJECT/models/             the voice registry (`voicetrain models --store PROJECT/models`)
    PROJECT/exports/            downloads built on request

Every path comes from :meth:`Project.path`, which refuses anything that would leave the folder
(absolute names, '..', links pointing out): an upload can only ever be written inside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from voicetrain.data.formats import decode_transcript, resolve_inside, safe_name
from voicetrain.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
"""Prompt, take and run ids: file-name safe, no separators, no leading dot."""
MAX_PROMPTS = 5000
MAX_PROMPT_CHARS = 400


class ProjectError(ValueError):
    """A request names something the project cannot hold or does not have; the message says what."""


class UnsafePathError(ProjectError):
    """A name that would resolve outside the project folder."""


class NotFoundError(ProjectError):
    """A prompt, take or run the project does not have."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value) or ".." in value:
        raise UnsafePathError(f"invalid {what} {value!r}: use 1-80 letters, digits, '_', '.' or '-', starting "
                              "with a letter or digit (no '/', no '..')")
    return value


def parse_prompts(data: bytes, where: str) -> list[Prompt]:
    """A prompt file: ``id<TAB>text`` lines (the ARCTIC/Harvard TSVs) or one sentence per line.

    Ids are made file-name safe and unique; blank lines and ``#`` comments are skipped."""
    text, issues = decode_transcript(data, where)
    if text is None:
        raise ProjectError(issues[0].message)
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in line:
            raw_id, _, sentence = line.partition("\t")
            pid = safe_name(raw_id.strip())[:60]
        else:
            pid, sentence = f"prompt_{n:04d}", line
        sentence = " ".join(sentence.split())
        if not sentence:
            raise ProjectError(f"{where}:{n}: prompt {pid!r} has no text")
        if len(sentence) > MAX_PROMPT_CHARS:
            raise ProjectError(f"{where}:{n}: prompt is {len(sentence)} characters; keep each under "
                               f"{MAX_PROMPT_CHARS} (one sentence, a few seconds to say)")
        base, k = pid, 2
        while pid in seen:
            pid, k = f"{base}_{k}", k + 1
        seen.add(pid)
        prompts.append(Prompt(pid, sentence))
        if len(prompts) > MAX_PROMPTS:
            raise ProjectError(f"{where}: more than {MAX_PROMPTS} prompts; split the file")
    if not prompts:
        raise ProjectError(f"{where}: no prompts (expected 'id<TAB>text' lines or one sentence per line)")
    return prompts


def arctic_prompts() -> list[Prompt]:
    data = resources.files("voicetrain.data").joinpath("prompts/arctic_prompts.tsv").read_bytes()
    return parse_prompts(data, "arctic_prompts.tsv")


class Project:
    """One studio project folder (created on first use)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("takes", "checks", "runs", "exports"):
            (self.root / sub).mkdir(exist_ok=True)
        self._prompts: list[Prompt] | None = None

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> Path:
        """``PROJECT/parts...``, refused when it would leave the project (after resolving links and '..')."""
        rel = "/".join(parts)
        p = resolve_inside(self.root, rel)
        if p is None:
            raise UnsafePathError(f"{rel!r} is outside the project folder {self.root}")
        return p

    @property
    def settings_path(self) -> Path:
        return self.root / "project.json"

    def settings(self) -> dict[str, Any]:
        try:
            s = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            s = {}
        s.setdefault("speaker", safe_name(self.root.name))
        s.setdefault("prompts", "arctic")
        return s

    def save_settings(self, **changes: Any) -> dict[str, Any]:
        s = self.settings()
        s.update(changes)
        atomic_write_json(self.settings_path, s)
        return s

    @property
    def speaker(self) -> str:
        return safe_name(self.settings()["speaker"])

    # ---------------------------------------------------------------- prompts
    def prompts(self) -> list[Prompt]:
        if self._prompts is None:
            src = self.settings()["prompts"]
            if src == "arctic":
                self._prompts = arctic_prompts()
            else:
                path = self.path(src)
                self._prompts = parse_prompts(path.read_bytes(), str(path))
        return self._prompts

    def set_prompts(self, data: bytes, filename: str = "prompts.tsv") -> list[Prompt]:
        """Use the user's prompt file (parsed first: a bad file changes nothing)."""
        prompts = parse_prompts(data, filename)
        atomic_write_text(self.path("prompts.tsv"), "".join(f"{p.id}\t{p.text}\n" for p in prompts))
        self.save_settings(prompts="prompts.tsv")
        self._prompts = prompts
        return prompts

    def use_arctic(self) -> list[Prompt]:
        self.save_settings(prompts="arctic")
        self._prompts = None
        return self.prompts()

    def prompt(self, pid: str) -> Prompt:
        check_id(pid, "prompt id")
        for p in self.prompts():
            if p.id == pid:
                return p
        raise NotFoundError(f"unknown prompt {pid!r}: the prompt list has no such id")

    # ------------------------------------------------------------------ takes
    def take_paths(self, pid: str) -> tuple[Path, Path, Path]:
        check_id(pid, "take id")
        return self.path("takes", f"{pid}.wav"), self.path("takes", f"{pid}.txt"), self.path("checks", f"{pid}.json")

    def save_take(self, pid: str, wav: bytes) -> Prompt:
        """Write the take's wav (the bytes as sent) and its prompt text; the old verdict is dropped."""
        prompt = self.prompt(pid)
        wav_path, txt_path, check_path = self.take_paths(pid)
        # the verdict goes first: a crash in between leaves a take without a verdict (re-checked), never a
        # new take beside the old take's verdict
        check_path.unlink(missing_ok=True)
        atomic_write_bytes(wav_path, wav)
        atomic_write_text(txt_path, prompt.text + "\n")
        return prompt

    def save_verdict(self, pid: str, verdict: dict[str, Any]) -> None:
        atomic_write_json(self.take_paths(pid)[2], verdict)

    def verdict(self, pid: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.take_paths(pid)[2].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def delete_take(self, pid: str) -> None:
        for p in self.take_paths(pid):
            p.unlink(missing_ok=True)

    def take_ids(self) -> list[str]:
        """Takes in takes/; a file whose name is no id, or a link leading out of the project, is not one."""
        takes = self.root / "takes"
        return sorted(p.stem for p in takes.glob("*.wav")
                      if ID_RE.fullmatch(p.stem) and resolve_inside(self.root, f"takes/{p.name}") is not None)

    def takes(self) -> list[dict[str, Any]]:
        """Every take with its prompt text and verdict (None while it is being checked)."""
        out = []
        for pid in self.take_ids():
            wav, txt, _ = self.take_paths(pid)
            text = txt.read_text(encoding="utf-8").strip() if txt.exists() else ""
            out.append({"id": pid, "text": text, "verdict": self.verdict(pid), "bytes": wav.stat().st_size})
        return out

    def stage_corpus(self, take_ids: list[str]) -> Path:
        """PROJECT/corpus/SPEAKER/ holding exactly ``take_ids`` (hard links, else copies): a pairs folder
        named after the speaker, which `voicetrain prepare` reads as that speaker's recordings."""
        corpus = self.path("corpus")
        if corpus.exists():
            shutil.rmtree(corpus)
        folder = self.path("corpus", self.speaker)
        folder.mkdir(parents=True)
        for pid in take_ids:
            for src in self.take_paths(pid)[:2]:
                dst = folder / src.name
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
        return folder

    # ------------------------------------------------------------------- runs
    def run_dir(self, name: str) -> Path:
        return self.path("runs", check_id(name, "run name"))

    def run_names(self) -> list[str]:
        runs = self.root / "runs"
        return sorted((p.name for p in runs.iterdir() if p.is_dir() and ID_RE.fullmatch(p.name)),
                      key=lambda n: (runs / n).stat().st_mtime)

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def store_dir(self) -> Path:
        return self.root / "models"
