"""`voicetrain studio`: the routes of the local web app (record, check, train, listen, keep).

The page is static HTML/JS/CSS served from the package (studio/static, templates/studio.html): nothing is
fetched from elsewhere, so it works offline. Every route under /api/ is JSON (or audio) and calls the
project store (project.py), the take checks (checks.py), the job runner (jobs.py: training runs as a
separate `voicetrain` process) or the run readers (runs.py).

Security: localhost by default, where the Host header must name the loopback (a web page elsewhere cannot
reach the studio by DNS rebinding) and a cross-origin write is refused; bound to another address an API
key is required (X-API-Key, Authorization: Bearer, or ?key= for audio elements). Bodies are size-limited
(413) before they are read, and files are only ever written inside the project folder (project.Project.path).
Errors are ``{"detail": ...}`` with a 4xx status saying what is wrong.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import os
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from fastapi import Request  # module level: FastAPI resolves the handlers' annotations here
from pydantic import BaseModel, ConfigDict, Field

from voicetrain.serving.guard import describe_errors, detail_error, refuse
from voicetrain.studio.checks import TakeChecker, TakeError
from voicetrain.studio.enough import Coverage
from voicetrain.studio.jobs import FINETUNE_FLAGS, Jobs, TrainRequest
from voicetrain.studio.project import NotFoundError, Project, ProjectError, check_id
from voicetrain.studio.runs import SynthCache, checkpoint_files, run_summary

STATIC = Path(__file__).resolve().parent / "static"
MAX_TAKE_BYTES = 16 * 1024 * 1024
"""A take: 60 s of 48 kHz stereo 16-bit is 11.5 MB."""
MAX_PROMPTS_BYTES = 1024 * 1024
MAX_JSON_BYTES = 64 * 1024
MAX_TEXT_CHARS = 1000
MAX_ERRORS_REPORTED = 10
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
log = logging.getLogger("voicetrain.studio")


class TrainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str = "scratch"
    preset: str = "cpu"
    max_minutes: Optional[float] = Field(15.0, gt=0)
    max_steps: Optional[int] = Field(None, gt=0)
    settings: list[str] = Field(default_factory=list, max_length=20)


class SynthBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field(..., max_length=80)
    checkpoint: str = Field("best", max_length=120)
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS)


class SelectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checkpoint: str = Field(..., max_length=120)


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field(..., max_length=80)
    name: str = Field(..., max_length=64)
    checkpoint: str = Field("best", max_length=120)
    note: str = Field("", max_length=2000)


class SettingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    speaker: str = Field(..., min_length=1, max_length=64)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def body_limit(method: str, path: str) -> int:
    if method in ("POST", "PUT") and path.startswith("/api/takes/"):
        return MAX_TAKE_BYTES
    if path == "/api/prompts":
        return MAX_PROMPTS_BYTES
    return MAX_JSON_BYTES


class Studio:
    """The app's state: one project, its checker, job runner and caches (no module-level state)."""

    def __init__(self, project: Project, checker: TakeChecker | None = None):
        self.project = project
        self.checker = checker or TakeChecker()
        self.jobs = Jobs(project)
        self.coverage = Coverage()
        self.synth = SynthCache()
        self._check_lock = threading.Lock()

    def check_take(self, pid: str) -> dict[str, Any]:
        wav, _, _ = self.project.take_paths(pid)
        prompt = self.project.prompt(pid)
        try:
            verdict = self.checker.check(wav.read_bytes(), prompt.text, f"takes/{wav.name}")
        except TakeError as e:
            verdict = {"status": "bad", "prompt": prompt.text, "measures": {},
                       "issues": [{"code": "unreadable", "severity": "error", "message": f"takes/{wav.name}: {e}"}]}
        self.project.save_verdict(pid, verdict)
        return verdict

    def check_unchecked(self) -> None:
        """Takes left without a verdict (the studio stopped while checking): checked once at start."""
        for pid in self.project.take_ids():
            if self.project.verdict(pid) is None:
                try:
                    self.check_take(pid)
                except (ProjectError, OSError) as e:  # e.g. the prompt list changed since
                    log.warning("take %s not checked: %s", pid, e)

    def good_takes(self) -> list[str]:
        out = []
        for pid in self.project.take_ids():
            v = self.project.verdict(pid)
            if v is not None and v.get("status") != "bad":
                out.append(pid)
        return out


def create_app(project: str | os.PathLike | Project, *, api_key: str | None = None,
               allowed_hosts: set[str] | None = None, checker: TakeChecker | None = None,
               check_on_start: bool = True):
    """The studio's FastAPI app on ``project`` (a folder, created when missing).

    ``allowed_hosts``: Host header names accepted (the loopback names when bound to localhost); None accepts
    any (behind an API key). ``checker``: the take judge (tests pass one without Whisper).
    """
    import anyio
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
    from fastapi.staticfiles import StaticFiles

    from voicetrain._version import __version__

    proj = project if isinstance(project, Project) else Project(project)
    studio = Studio(proj, checker)
    app = FastAPI(title="voicetrain studio", version=__version__, docs_url=None, redoc_url=None)
    app.state.studio = studio
    one_at_a_time = anyio.CapacityLimiter(1)

    error = detail_error

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]") if request.headers.get("host") else ""
        if allowed_hosts is not None and host not in allowed_hosts:
            return error(421, f"Host {host!r} is not this studio's address; open it as http://127.0.0.1 "
                              "(or start it with --host and --api-key to reach it from elsewhere)")
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and origin != "null":
            if urlsplit(origin).netloc != request.headers.get("host"):
                return error(403, f"cross-origin request from {origin} refused")
        limit = body_limit(request.method, request.url.path)
        refusal = await refuse(request, api_key=api_key, key_prefix="/api/", key_in_query=True, limit=limit,
                               methods=("POST", "PUT"),
                               too_big=f"request body over the limit of {limit} bytes for {request.url.path}")
        if refusal is not None:
            return error(refusal.status, refusal.detail, refusal.headers)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error(422, describe_errors(exc.errors(), MAX_ERRORS_REPORTED))

    @app.exception_handler(ProjectError)
    async def project_error(request: Request, exc: ProjectError):
        return error(404 if isinstance(exc, NotFoundError) else 400, str(exc))

    @app.exception_handler(FileNotFoundError)
    async def not_found(request: Request, exc: FileNotFoundError):
        return error(404, str(exc))

    def run_path(name: str) -> Path:
        d = proj.run_dir(name)
        if not d.is_dir():
            raise NotFoundError(f"unknown run {name!r}")
        return d

    # ------------------------------------------------------------------ page
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        from voicetrain.templates import render

        return render("studio.html", version=__version__, needs_key=bool(api_key))

    @app.get("/api/state")
    async def state():
        s = proj.settings()
        return {"project": str(proj.root), "speaker": proj.speaker, "prompts": s["prompts"],
                "n_prompts": len(proj.prompts()), "version": __version__, "active_run": studio.jobs.active()}

    @app.post("/api/settings")
    async def settings(body: SettingsBody):
        from voicetrain.data.formats import safe_name

        return proj.save_settings(speaker=safe_name(body.speaker))

    # --------------------------------------------------------------- prompts
    @app.get("/api/prompts")
    async def prompts():
        done = {t["id"]: (t["verdict"] or {}).get("status", "checking") for t in proj.takes()}
        return {"source": proj.settings()["prompts"],
                "prompts": [{"id": p.id, "text": p.text, "take": done.get(p.id)} for p in proj.prompts()]}

    @app.post("/api/prompts")
    async def set_prompts(request: Request):
        ps = proj.set_prompts(await request.body(), request.headers.get("x-filename", "prompts.tsv"))
        return {"source": "prompts.tsv", "count": len(ps)}

    @app.post("/api/prompts/arctic")
    async def use_arctic():
        return {"source": "arctic", "count": len(proj.use_arctic())}

    # ----------------------------------------------------------------- takes
    @app.get("/api/takes")
    async def takes():
        return {"takes": proj.takes()}

    @app.post("/api/takes/{pid:path}")
    async def upload_take(pid: str, request: Request):
        check_id(pid, "take id")
        prompt = proj.prompt(pid)
        data = await request.body()
        try:  # refuse what is not audio before anything is written: a good take is never replaced by junk
            from voicetrain.studio.checks import decode_take

            await anyio.to_thread.run_sync(decode_take, data)
        except TakeError as e:
            return error(422, f"take {pid}: {e}")
        proj.save_take(pid, data)
        verdict = await anyio.to_thread.run_sync(studio.check_take, pid, limiter=one_at_a_time)
        return {"id": pid, "text": prompt.text, "verdict": verdict}

    @app.get("/api/takes/{pid}/audio")
    async def take_audio(pid: str):
        wav = proj.take_paths(pid)[0]
        if not wav.is_file():
            return error(404, f"no take {pid!r} yet")
        return FileResponse(wav, media_type="audio/wav")

    @app.delete("/api/takes/{pid:path}")
    async def delete_take(pid: str):
        proj.delete_take(pid)
        return {"deleted": pid}

    @app.get("/api/enough")
    async def enough():
        return await anyio.to_thread.run_sync(studio.coverage.report, proj)

    # ----------------------------------------------------------------- train
    @app.get("/api/train/options")
    async def train_options():
        caps = await anyio.to_thread.run_sync(studio.jobs.capabilities)
        return {"finetune_available": not caps.finetune_needs_from, "finetune_dry_run": caps.finetune_dry_run,
                "piper_export": caps.piper_export, "good_takes": len(studio.good_takes()),
                "finetune_settings": list(FINETUNE_FLAGS),
                "presets": ["cpu", "gpu", "tiny"]}

    def train_request(name: str, body: TrainBody) -> TrainRequest:
        return TrainRequest(check_id(name, "run name"), body.mode, body.preset, body.max_minutes, body.max_steps,
                            list(body.settings))

    @app.post("/api/runs/{name}/estimate")
    async def estimate(name: str, body: TrainBody):
        req = train_request(name, body)
        return await anyio.to_thread.run_sync(lambda: studio.jobs.start(req, studio.good_takes(), estimate_only=True))

    @app.post("/api/runs/{name}/start")
    async def start(name: str, body: TrainBody):
        req = train_request(name, body)
        return await anyio.to_thread.run_sync(lambda: studio.jobs.start(req, studio.good_takes()))

    @app.post("/api/runs/{name}/resume")
    async def resume(name: str):
        job = studio.jobs.job(check_id(name, "run name"))
        if not job or not job.get("request"):
            raise NotFoundError(f"unknown run {name!r}: nothing to resume")
        r = job["request"]
        req = TrainRequest(name, r["mode"], r["preset"], r["max_minutes"], r["max_steps"], r["settings"])
        return await anyio.to_thread.run_sync(lambda: studio.jobs.start(req, studio.good_takes(), resume=True))

    @app.post("/api/runs/{name}/pause")
    async def pause(name: str):
        return studio.jobs.stop(check_id(name, "run name"), "paused")

    @app.post("/api/runs/{name}/stop")
    async def stop(name: str):
        return studio.jobs.stop(check_id(name, "run name"), "stopped")

    @app.get("/api/runs")
    async def runs():
        return {"runs": [{"name": n, "job": studio.jobs.job(n), "checkpoints": checkpoint_files(proj.run_dir(n))}
                         for n in proj.run_names()]}

    @app.get("/api/runs/{name}")
    async def run(name: str):
        d = run_path(name)
        return {"name": name, "job": studio.jobs.job(name), "log": studio.jobs.log_tail(name), **run_summary(d)}

    @app.get("/api/runs/{name}/files/{rel:path}")
    async def run_file(name: str, rel: str):
        d = run_path(name)
        p = proj.path("runs", name, rel)
        if p.suffix not in (".wav", ".png") or not p.is_file() or d not in p.parents:
            return error(404, f"no file {rel!r} in run {name!r}")
        return FileResponse(p, media_type="audio/wav" if p.suffix == ".wav" else "image/png")

    # ---------------------------------------------------------------- listen
    @app.get("/api/runs/{name}/checkpoints")
    async def checkpoints(name: str):
        d = run_path(name)

        def choose():
            from voicetrain.inference.checkpoint import choose_checkpoint

            files = checkpoint_files(d)
            if not files:
                return {"checkpoints": [], "selected": None, "reason": "no checkpoints yet"}
            c = choose_checkpoint(d, "best")
            return {"checkpoints": files, "selected": c.path.name, "reason": c.reason,
                    "overridden": (d / "selected_checkpoint.txt").exists()}
        return await anyio.to_thread.run_sync(choose)

    @app.post("/api/runs/{name}/select")
    async def select(name: str, body: SelectBody):
        d = run_path(name)
        if body.checkpoint not in checkpoint_files(d):
            return error(404, f"run {name!r} has no checkpoint {body.checkpoint!r}")
        from voicetrain.fileio import atomic_write_text

        # the file `voicetrain eval --select-best` writes: synth, models add and export then use it too
        atomic_write_text(d / "selected_checkpoint.txt", body.checkpoint + "\n")
        return {"selected": body.checkpoint}

    @app.delete("/api/runs/{name}/select")
    async def unselect(name: str):
        (run_path(name) / "selected_checkpoint.txt").unlink(missing_ok=True)
        return {"selected": None}

    @app.post("/api/synthesize")
    async def synthesize(body: SynthBody):
        import soundfile as sf

        d = run_path(check_id(body.run, "run name"))
        ckpt = body.checkpoint
        if ckpt == "best":
            from voicetrain.inference.checkpoint import choose_checkpoint

            path = await anyio.to_thread.run_sync(lambda: choose_checkpoint(d, "best").path)
        elif ckpt in checkpoint_files(d):
            path = d / "checkpoints" / ckpt
        else:
            return error(404, f"run {body.run!r} has no checkpoint {ckpt!r}")
        from voicetrain.inference.checkpoint import CheckpointError
        from voicetrain.text.tokenizer import NoSpeakableTextError

        try:
            audio, sr = await anyio.to_thread.run_sync(studio.synth.synthesize, path, body.text, limiter=one_at_a_time)
        except NoSpeakableTextError as e:
            return error(422, f"text: {e}")
        except CheckpointError as e:
            return error(422, str(e))
        buf = io.BytesIO()
        sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
        return Response(buf.getvalue(), media_type="audio/wav", headers={"X-Checkpoint": path.name})

    # ------------------------------------------------------------------ keep
    def store():
        from voicetrain.registry.store import ModelStore

        return ModelStore(proj.store_dir)

    @app.get("/api/voices")
    async def voices():
        from voicetrain.registry.store import BUILTIN

        st = store()
        out = []
        for b in st.list():
            if b.name == BUILTIN:  # the shipped base is not one of the project's voices
                continue
            card = {}
            try:
                import json

                card = json.loads((st.resolve(f"{b.name}@{b.version}") / "card.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
            snips = await voice_snippets(b.name, b.version)
            out.append({"name": b.name, "version": b.version, "created": b.created, "note": card.get("note", ""),
                        "checkpoint": (card.get("training") or {}).get("checkpoint"),
                        "snippet": snips["curl"], "snippets": snips})
        return {"voices": out, "store": str(proj.store_dir)}

    async def voice_snippets(name: str, version: str) -> dict[str, str]:
        from voicetrain.studio.snippets import snippets

        caps = await anyio.to_thread.run_sync(studio.jobs.capabilities)
        return snippets(name, version, proj.store_dir, piper=caps.piper_export)

    @app.post("/api/voices")
    async def register(body: RegisterBody):
        from voicetrain.config import ConfigError
        from voicetrain.inference.bundle import register_run
        from voicetrain.inference.checkpoint import CheckpointError
        from voicetrain.registry.store import RegistryError

        d = run_path(check_id(body.run, "run name"))
        which = body.checkpoint
        if which not in ("best", "last") and which not in checkpoint_files(d):
            return error(404, f"run {body.run!r} has no checkpoint {which!r}")
        # a named checkpoint is registered as the file itself; best/last as the run decides
        source = d if which in ("best", "last") else d / "checkpoints" / which
        try:
            path = await anyio.to_thread.run_sync(lambda: register_run(
                source, body.name, "last" if which == "last" else "best", store(), note=body.note))
        except (RegistryError, CheckpointError, ConfigError) as e:
            return error(422, str(e))
        snips = await voice_snippets(path.parent.name, path.name)
        return {"name": path.parent.name, "version": path.name, "snippet": snips["curl"], "snippets": snips}

    @app.get("/api/voices/{name}/{version}/bundle.zip")
    async def bundle_zip(name: str, version: str):
        from voicetrain.registry.store import RegistryError

        try:
            folder = store().resolve(f"{name}@{version}")
        except RegistryError as e:
            return error(404, str(e))
        return zip_download(folder, f"{name}-{version}")

    @app.get("/api/voices/{name}/{version}/piper.zip")
    async def piper_zip(name: str, version: str):
        import subprocess

        from voicetrain.studio.jobs import _env, cli

        caps = await anyio.to_thread.run_sync(studio.jobs.capabilities)
        if not caps.piper_export:
            return error(404, "this install's `voicetrain export` has no Piper format; download the bundle instead")
        check_id(name, "voice name")
        check_id(version, "version")
        out = proj.path("exports", f"{name}-{version}-piper")
        shutil.rmtree(out, ignore_errors=True)
        r = await anyio.to_thread.run_sync(lambda: subprocess.run(
            cli("export", f"{name}@{version}", "--format", "piper", "--out", str(out), "--store", str(proj.store_dir)),
            capture_output=True, text=True, env=_env(), timeout=600))
        if r.returncode != 0:
            return error(422, f"Piper export failed: {(r.stderr or r.stdout).strip()[-800:]}")
        return zip_download(out, f"{name}-{version}-piper")

    @app.get("/api/voices/{name}/{version}/snippet", response_class=PlainTextResponse)
    async def voice_snippet(name: str, version: str, kind: str = "curl"):
        check_id(name, "voice name")
        check_id(version, "version")
        snips = await voice_snippets(name, version)
        if kind not in snips:
            return error(422, f"kind {kind!r}: choose one of {', '.join(snips)}")
        return snips[kind]

    if check_on_start:
        threading.Thread(target=studio.check_unchecked, daemon=True, name="studio-recheck").start()
    return app


def zip_download(folder: Path, stem: str):
    """``folder``'s files as STEM.zip, each under STEM/ (unzipping makes one folder, not a spray of files)."""
    from fastapi.responses import Response

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{stem}/{p.relative_to(folder)}")
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{stem}.zip"'})


def serve_studio(project: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 7860,
                 api_key: str | None = None, log_level: str = "warning") -> None:
    """Run the studio with uvicorn. Bound to anything but the loopback, an API key is required."""
    import uvicorn

    local = is_loopback(host)
    if not local and not api_key:
        raise ValueError(f"--host {host} makes the studio reachable from other machines: pass --api-key KEY "
                         "(or set VOICETRAIN_STUDIO_API_KEY), or bind to 127.0.0.1")
    allowed = LOOPBACK_NAMES if local and not api_key else None
    app = create_app(project, api_key=api_key, allowed_hosts=allowed)
    print(f"voicetrain studio: http://{'127.0.0.1' if local else host}:{port}/  project: "
          f"{app.state.studio.project.root}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
