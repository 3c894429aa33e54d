"""Immutable, versioned voice bundles in a user data folder.

Layout of a store (default ``~/.local/share/voicetrain/models``)::

    NAME/v1/                 one bundle (read-only once written)
        model.safetensors    model state dict (no pickle on the load path)
        voice.json           everything needed to rebuild the Synthesizer
        card.json, card.md   the model card
        manifest.json        sha256 of every other file in the folder
    NAME/v2/ ...
    NAME/tags.json           {"prod": "v1", ...}; ``latest`` is the newest version unless tagged
    NAME/removed.json        versions removed with `models remove`; their numbers are never reused
    NAME/.lock               serializes add/tag/remove of one name across processes

Every store also lists ``builtin``: the multi-speaker base voice that ships inside the package
(``voicetrain/pretrained/base``, a bundle of the same layout), read-only, version v1. The name is
reserved: nothing can be added, tagged or removed under it.

A version is built in a temp folder beside its final place and renamed into place
(``rename`` of a folder onto an existing one fails, so two concurrent adds can never
write the same version). This module imports no torch: ``models list`` stays fast.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from voicetrain.fileio import atomic_write_json, sha256_file

BUNDLE_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
VOICE_JSON = "voice.json"
WEIGHTS = "model.safetensors"

BUILTIN = "builtin"
"""The reserved name of the shipped base voice (``voicetrain finetune`` starts from it by default)."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_RE = re.compile(r"^v([1-9][0-9]{0,8})$")
_VERSION_LIKE_RE = re.compile(r"v[0-9]+")


class RegistryError(ValueError):
    """A registry operation cannot be done; the message says why and what to do."""


class BundleNotFoundError(RegistryError, LookupError):
    pass


class DamagedBundleError(RegistryError):
    """A bundle file is missing or its sha256 does not match the manifest."""


def default_store_dir() -> Path:
    """$VOICETRAIN_HOME/models, else $XDG_DATA_HOME/voicetrain/models, else ~/.local/share/voicetrain/models."""
    home = os.environ.get("VOICETRAIN_HOME")
    if home:
        return Path(home).expanduser() / "models"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "voicetrain" / "models"


def builtin_dir() -> Path:
    """The shipped base voice's bundle folder inside the package (it may be absent in a source checkout)."""
    return Path(__file__).resolve().parent.parent / "pretrained" / "base"


def validate_name(name: str, what: str = "voice name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise RegistryError(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit "
            "(no '/', no '..')")
    return name


def parse_version(v: str) -> int:
    m = _VERSION_RE.fullmatch(v)
    if not m:
        raise RegistryError(f"invalid version {v!r}: versions are written v1, v2, ...")
    return int(m.group(1))


@dataclass(frozen=True)
class VoiceRef:
    """``NAME``, ``NAME@v3`` or ``NAME@TAG`` (a bare NAME means NAME@latest)."""

    name: str
    selector: str = "latest"

    @classmethod
    def parse(cls, ref: str) -> "VoiceRef":
        name, _, sel = ref.partition("@")
        validate_name(name)
        if "@" in ref and not sel:
            raise RegistryError(f"invalid voice reference {ref!r}: write NAME, NAME@vN or NAME@TAG")
        sel = sel or "latest"
        if _VERSION_LIKE_RE.fullmatch(sel):
            parse_version(sel)  # v0, v007: refused rather than read as a tag
        else:
            validate_name(sel, "tag")
        return cls(name, sel)

    def __str__(self) -> str:
        return f"{self.name}@{self.selector}"


def write_manifest(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    hashes = {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}
    atomic_write_json(folder / MANIFEST, {"algorithm": "sha256", "files": hashes})
    return hashes


def verify_bundle(folder: str | os.PathLike) -> dict[str, str]:
    """Check every file against manifest.json; raise DamagedBundleError naming the first bad file."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files listed")
    except FileNotFoundError:
        raise DamagedBundleError(f"{mpath} is missing: {folder} is not a complete voice bundle; "
                                 "re-add it with `voicetrain models add RUN`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedBundleError(f"{mpath} is unreadable ({e}); re-add the voice with `voicetrain models add RUN`") from None
    for rel, expected in files.items():
        p = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise DamagedBundleError(f"{mpath} lists an unsafe path {rel!r}; refusing to load {folder}")
        if not p.is_file():
            raise DamagedBundleError(f"{p} is missing from bundle {folder}; re-add the voice with `voicetrain models add RUN`")
        if sha256_file(p) != expected:
            raise DamagedBundleError(
                f"{p} is damaged: its sha256 does not match {MANIFEST} (the file changed after the bundle was "
                "written); restore it from a backup or re-add the voice with `voicetrain models add RUN`")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}
    extra = sorted(present - set(files))
    if extra:
        raise DamagedBundleError(f"{folder / extra[0]} is not listed in {MANIFEST}: the bundle was modified; "
                                 "remove the file or re-add the voice")
    return files


def _make_read_only(folder: Path) -> None:
    for p in sorted(folder.rglob("*"), reverse=True):
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    folder.chmod(folder.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(folder: Path) -> None:
    folder.chmod(folder.stat().st_mode | stat.S_IWUSR)
    for p in folder.rglob("*"):
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


@dataclass(frozen=True)
class BundleInfo:
    name: str
    version: str
    path: Path
    tags: tuple[str, ...]
    created: str
    model: str
    speakers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "path": str(self.path), "tags": list(self.tags),
                "created": self.created, "model": self.model, "speakers": list(self.speakers)}


class ModelStore:
    """A folder of named voices, each with immutable numbered versions."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_store_dir()

    # ------------------------------------------------------------------ reading
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name))

    def versions(self, name: str) -> list[str]:
        d = self.root / validate_name(name)
        if not d.is_dir():
            return []
        found = [p.name for p in d.iterdir() if p.is_dir() and _VERSION_RE.fullmatch(p.name)]
        return sorted(found, key=parse_version)

    def tags(self, name: str) -> dict[str, str]:
        if name == BUILTIN:
            return {"latest": "v1"}
        p = self.root / validate_name(name) / "tags.json"
        tags = json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
        versions = self.versions(name)
        if "latest" not in tags and versions:
            tags["latest"] = versions[-1]
        return {t: v for t, v in tags.items() if v in versions}

    def resolve(self, ref: str | VoiceRef) -> Path:
        """NAME / NAME@vN / NAME@TAG -> the bundle folder (not verified; see :func:`verify_bundle`)."""
        ref = VoiceRef.parse(ref) if isinstance(ref, str) else ref
        if ref.name == BUILTIN:
            if ref.selector not in ("latest", "v1"):
                raise BundleNotFoundError(f"the shipped voice {BUILTIN!r} has only version v1 (got {ref.selector!r})")
            if not is_bundle_dir(builtin_dir()):
                raise BundleNotFoundError(f"this voicetrain install has no shipped base voice ({builtin_dir()} is "
                                          "missing); reinstall voicetrain, or pass --from RUN")
            return builtin_dir()
        versions = self.versions(ref.name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise BundleNotFoundError(f"no voice named {ref.name!r} in {self.root} (voices: {known}); "
                                      "add one with `voicetrain models add RUN --name NAME`")
        if _VERSION_RE.fullmatch(ref.selector):
            if ref.selector not in versions:
                raise BundleNotFoundError(f"voice {ref.name!r} has no version {ref.selector} "
                                          f"(versions: {', '.join(versions)})")
            return self.root / ref.name / ref.selector
        tags = self.tags(ref.name)
        if ref.selector not in tags:
            raise BundleNotFoundError(f"voice {ref.name!r} has no tag {ref.selector!r} "
                                      f"(tags: {', '.join(f'{t}={v}' for t, v in sorted(tags.items()))})")
        return self.root / ref.name / tags[ref.selector]

    def info(self, name: str, version: str) -> BundleInfo:
        path = builtin_dir() if name == BUILTIN else self.root / name / version
        try:
            voice = json.loads((path / VOICE_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            voice = {}
        tags = tuple(sorted(t for t, v in self.tags(name).items() if v == version))
        return BundleInfo(name, version, path, tags, voice.get("created", ""), voice.get("model", "?"),
                          tuple(voice.get("speakers", [])))

    def list(self) -> list[BundleInfo]:
        shipped = [self.info(BUILTIN, "v1")] if is_bundle_dir(builtin_dir()) else []
        return shipped + [self.info(n, v) for n in self.names() for v in self.versions(n)]

    def show(self, ref: str) -> dict[str, Any]:
        """Bundle info plus its model card (card.json) and voice.json summary."""
        path = self.resolve(ref)
        name, version = (BUILTIN, "v1") if path == builtin_dir() else (path.parent.name, path.name)
        out = self.info(name, version).to_dict()
        card = path / "card.json"
        out["card"] = json.loads(card.read_text(encoding="utf-8")) if card.exists() else None
        return out

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        if name == BUILTIN:
            raise RegistryError(f"{BUILTIN!r} is the shipped base voice: it is read-only and its name is reserved; "
                                "use another name")
        d = self.root / validate_name(name)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _removed(self, d: Path) -> list[str]:
        p = d / "removed.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else []

    def add_folder(self, name: str, build: Callable[[Path, str], None], version: str | None = None) -> Path:
        """Create NAME/VERSION by calling ``build(tmp_folder, version)``, then hash, freeze and rename it.

        ``version`` (vN) is normally chosen as the next free number; asking for an
        existing or removed one is refused: versions are immutable.
        """
        with self._locked(name) as d:
            used = self.versions(name) + self._removed(d)
            if version is None:
                version = f"v{max((parse_version(v) for v in used), default=0) + 1}"
            else:
                parse_version(version)
                if version in used:
                    raise RegistryError(f"{d / version} already exists (or was removed): versions are immutable; "
                                        "add without --version to create the next one")
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=d))
            try:
                build(tmp, version)
                write_manifest(tmp)
                tmp.chmod(0o755)
                _make_read_only(tmp)
                os.rename(tmp, d / version)  # fails if the target exists: never overwrites
            except BaseException:
                if tmp.exists():
                    _make_writable(tmp)
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
            return d / version

    def tag(self, ref: str, tag: str) -> str:
        r = VoiceRef.parse(ref)
        validate_name(tag, "tag")
        if _VERSION_LIKE_RE.fullmatch(tag) or tag == "latest":
            raise RegistryError(f"tag {tag!r} is reserved (a version, or 'latest', which follows the newest "
                                "version); pick another name (e.g. 'prod')")
        path = self.resolve(r)
        with self._locked(r.name) as d:
            p = d / "tags.json"
            tags = json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
            tags[tag] = path.name
            atomic_write_json(p, tags, sort_keys=True)
        return path.name

    def remove(self, ref: str) -> Path:
        """Delete NAME@vN (an explicit version is required) and the tags that pointed to it."""
        r = VoiceRef.parse(ref)
        if not _VERSION_RE.fullmatch(r.selector):
            raise RegistryError(f"remove needs an explicit version, e.g. {r.name}@v1 (got {ref!r})")
        path = self.resolve(r)
        with self._locked(r.name) as d:
            trash = d / f".removing-{r.selector}-{os.getpid()}"
            os.rename(path, trash)  # atomic: readers see the whole bundle or none
            removed = sorted(set(self._removed(d)) | {r.selector}, key=parse_version)
            atomic_write_json(d / "removed.json", removed, indent=None)
            p = d / "tags.json"
            if p.exists():
                tags = {t: v for t, v in json.loads(p.read_text(encoding="utf-8")).items() if v != r.selector}
                atomic_write_json(p, tags, sort_keys=True)
            _make_writable(trash)
            shutil.rmtree(trash)
        return path


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_bundle_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / VOICE_JSON).is_file()
