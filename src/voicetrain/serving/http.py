"""HTTP server: POST /v1/synthesize, GET /v1/voices, GET /healthz. Calls the Synthesizer only.

Voices are loaded once, when the app is created, into an :class:`AppState` held by
the app (no module-level caches). Synthesis is CPU-bound torch work on one thread
per call (the Synthesizer's default): each request runs in a worker thread taken
from a bounded limiter (``workers``, default 2 = the cores of the target machine),
and borrows one of ``workers`` synthesizer replicas of its voice (see ServedVoice).

Errors are JSON ``{"detail": "..."}`` saying what is wrong: 401 missing or wrong
API key, 404 unknown voice, 413 text too long, 422 empty/unspeakable text, unknown
speaker, out-of-range speed or malformed JSON.
"""

from __future__ import annotations

import dataclasses
import hmac
import io
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, Union

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field

MAX_TEXT_CHARS = 2000
MIN_SPEED, MAX_SPEED = 0.25, 4.0
MAX_SPEAKER_ID = 1_000_000
MAX_ERRORS_REPORTED = 10
"""A body of thousands of bad keys gets the first few problems named, not a reply larger than itself."""


def max_body_bytes(max_text_chars: int) -> int:
    """Largest request body accepted: the text limit in 4-byte UTF-8 (or 6-byte JSON escapes), plus the rest."""
    return 6 * max_text_chars + 4096


class SynthesizeRequest(BaseModel):
    """Body of POST /v1/synthesize (module level: FastAPI resolves the handler's annotation here)."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., description="Text to speak (at most the server's limit, 2000 characters by default).")
    voice: Optional[str] = Field(None, description="Voice name from GET /v1/voices (default: the first).")
    # strict int first: a 5000-digit numeric string must stay a (too long) name, never a giant int
    speaker: Optional[Union[Annotated[int, Field(strict=True, ge=0, le=MAX_SPEAKER_ID)],
                            Annotated[str, Field(max_length=200)]]] = Field(
        None, description="Speaker name or id (multi-speaker voices).")
    # strict: JSON true is not a speed (lax mode reads it as 1.0); ints are still accepted
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, strict=True, description=">1 speaks faster.")


class ServedVoice:
    """One voice and ``replicas`` synthesizers sharing its model weights.

    A Synthesizer is not safe to call from two threads at once (its tokenizer holds one
    espeak backend), so each replica has its own tokenizer; the model (read-only in
    inference mode) and the vocoder's buffers are shared. A request borrows a replica.
    """

    def __init__(self, voice: Any, replicas: int = 1):
        self.voice = voice
        self.pool: queue.SimpleQueue = queue.SimpleQueue()
        self.pool.put(voice)
        synth = getattr(voice, "synthesizer", None)
        for _ in range(max(1, replicas) - 1 if synth is not None else 0):
            from voicetrain.text.tokenizer import Tokenizer

            tok = Tokenizer(synth.tokenizer.text_cfg, synth.tokenizer.symbols)
            self.pool.put(dataclasses.replace(voice, synthesizer=dataclasses.replace(synth, tokenizer=tok)))
        self.requests = 0
        self._count_lock = threading.Lock()

    def synthesize(self, text: str, speaker, speed: float) -> tuple[np.ndarray, int]:
        v = self.pool.get()  # blocks until a replica is free
        try:
            with self._count_lock:
                self.requests += 1
            return v.synthesize(text, speaker=speaker, speed=speed)
        finally:
            self.pool.put(v)


@dataclass
class AppState:
    voices: dict[str, ServedVoice]
    default_voice: str
    api_key: Optional[str]
    max_text_chars: int
    limiter: Any  # anyio.CapacityLimiter
    started: float = field(default_factory=time.time)


def load_voices(refs: list[str], store=None) -> dict[str, Any]:
    """Load each NAME[@VERSION|@TAG] or bundle folder once; keyed by the reference as given."""
    from voicetrain.inference.bundle import load_voice

    return {ref: load_voice(ref, store=store) for ref in refs}


def create_app(voices: dict[str, Any], *, api_key: str | None = None, max_text_chars: int = MAX_TEXT_CHARS,
               workers: int = 2):
    """A FastAPI app serving ``voices`` ({request name: loaded Voice}); the first one is the default.

    A voice is also reachable by its bundle name (``demo``) and NAME@VERSION (``demo@v2``)
    when those are unambiguous.
    """
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    if not voices:
        raise ValueError("no voices to serve: add one with `voicetrain models add RUN` and name it")
    served = {k: ServedVoice(v, replicas=workers) for k, v in voices.items()}
    aliases: dict[str, list[str]] = {}
    for key, sv in served.items():
        name, version = getattr(sv.voice, "name", None), getattr(sv.voice, "version", None)
        for alias in (name, f"{name}@{version}" if name and version else None):
            if alias and alias not in served:
                aliases.setdefault(alias, []).append(key)
    for alias, keys in aliases.items():
        if len(keys) == 1:
            served.setdefault(alias, served[keys[0]])

    state = AppState(served, next(iter(voices)), api_key or None, max_text_chars, anyio.CapacityLimiter(max(1, workers)))
    app = FastAPI(title="voicetrain", version=_version(), docs_url=None, redoc_url=None)
    app.state.vt = state

    def error(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    def authorized(request: Request) -> bool:
        if state.api_key is None:
            return True
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given.encode(), state.api_key.encode())

    body_limit = max_body_bytes(max_text_chars)

    @app.middleware("http")
    async def api_key_check(request: Request, call_next):
        # checked before the body is parsed: a client without the key learns nothing else
        if request.url.path.startswith("/v1/") and not authorized(request):
            return JSONResponse({"detail": "missing or wrong API key: send it as 'X-API-Key: KEY' or "
                                           "'Authorization: Bearer KEY'"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        # refuse an oversized body before reading it (declared length), or as soon as it passes the limit
        declared = request.headers.get("content-length")
        too_big = error(413, f"request body over {body_limit} bytes; the text limit is {state.max_text_chars} characters")
        if declared is not None and (not declared.isdigit() or int(declared) > body_limit):
            return too_big
        if request.method == "POST" and declared is None:
            received = 0
            chunks = []
            async for chunk in request.stream():
                received += len(chunk)
                if received > body_limit:
                    return too_big
                chunks.append(chunk)
            request._body = b"".join(chunks)  # Starlette reads the cached body from here
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = []
        errors = exc.errors()
        for e in errors[:MAX_ERRORS_REPORTED]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            problems.append(f"{loc}: {e.get('msg', 'invalid')}")
        more = f" (and {len(errors) - MAX_ERRORS_REPORTED} more)" if len(errors) > MAX_ERRORS_REPORTED else ""
        return JSONResponse({"detail": "invalid request: " + "; ".join(problems) + more,
                             "errors": _jsonable(errors[:MAX_ERRORS_REPORTED])}, status_code=422)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "voices": len(voices), "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/v1/voices")
    async def list_voices():
        out = []
        for key in voices:
            v = served[key].voice
            out.append({"voice": key, "name": getattr(v, "name", key), "version": getattr(v, "version", None),
                        "speakers": list(v.speakers), "sample_rate": v.sample_rate,
                        "default": key == state.default_voice})
        return {"voices": out}

    @app.post("/v1/synthesize")
    async def synthesize(req: SynthesizeRequest):
        from voicetrain.inference.synthesizer import UnknownSpeakerError
        from voicetrain.text.tokenizer import NoSpeakableTextError

        if len(req.text) > state.max_text_chars:
            return error(413, f"text is {len(req.text)} characters; the limit is {state.max_text_chars}: "
                              "split it into several requests")
        if not req.text.strip():
            return error(422, "text is empty: send something to say")
        try:
            req.text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone UTF-16 surrogate ("\\ud800") is not text
            return error(422, f"text: invalid Unicode at character {e.start} (a lone surrogate, "
                              f"{req.text[e.start]!r}); send UTF-8 text")
        name = req.voice or state.default_voice
        sv = served.get(name)
        if sv is None:
            return error(404, f"unknown voice {name!r}; available: {', '.join(voices)} (GET /v1/voices)")
        speaker: Union[int, str, None] = req.speaker

        def run() -> tuple[np.ndarray, int]:
            return sv.synthesize(req.text, speaker, req.speed)

        t0 = time.perf_counter()
        try:
            audio, sr = await anyio.to_thread.run_sync(run, limiter=state.limiter)
        except UnknownSpeakerError as e:
            return error(422, f"speaker: {e}")
        except NoSpeakableTextError as e:
            return error(422, f"text: {e}")
        seconds = time.perf_counter() - t0
        buf = io.BytesIO()
        sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
        dur = len(audio) / sr
        return Response(buf.getvalue(), media_type="audio/wav", headers={
            "X-Voice": name, "X-Sample-Rate": str(sr), "X-Audio-Seconds": f"{dur:.3f}",
            "X-Synthesis-Seconds": f"{seconds:.3f}", "X-RTF": f"{seconds / max(dur, 1e-9):.4f}"})

    return app


def _jsonable(errors: list[dict]) -> list[dict]:
    out = []
    for e in errors:
        out.append({k: (v if isinstance(v, (str, int, float, list, tuple, type(None))) else str(v))
                    for k, v in e.items() if k in ("type", "loc", "msg")})
    return out


def _version() -> str:
    from voicetrain._version import __version__

    return __version__


def serve(refs: list[str], *, store=None, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          workers: int = 2, max_text_chars: int = MAX_TEXT_CHARS, log_level: str = "info") -> None:
    """Load the voices (all registered voices at their latest version when ``refs`` is empty) and run uvicorn."""
    import torch
    import uvicorn

    from voicetrain.registry.store import ModelStore

    # Each synthesis sets its own thread count (1) and restores the previous one; starting
    # from 1 keeps concurrent requests from flipping the process-wide count back and forth.
    torch.set_num_threads(1)

    st = store if isinstance(store, ModelStore) else ModelStore(store)
    if not refs:
        refs = st.names()
        if not refs:
            raise ValueError(f"no voices in {st.root}; add one with `voicetrain models add RUN --name NAME`")
    app = create_app(load_voices(refs, st), api_key=api_key, max_text_chars=max_text_chars, workers=workers)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
