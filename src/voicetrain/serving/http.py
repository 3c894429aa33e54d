"""HTTP server: POST /v1/synthesize, GET /v1/voices, GET /healthz, and OpenAI's POST /v1/audio/speech and
GET /v1/models (serving/openai_api.py). Calls the Synthesizer only; ``serve`` also runs the Wyoming server.

Voices are loaded once, when the app is created, into an :class:`AppState` held by
the app (no module-level caches). Synthesis is CPU-bound torch work on one thread
per call (the Synthesizer's default): each sentence runs in a worker thread taken
from a bounded limiter (``workers``, default 2 = the cores of the target machine),
and borrows one of ``workers`` synthesizer replicas of its voice (serving/voices.py).

``"stream": true`` sends the wav sentence by sentence (chunked transfer).

Errors are JSON ``{"detail": "..."}`` saying what is wrong: 401 missing or wrong
API key, 404 unknown voice, 413 text too long, 422 empty/unspeakable text, unknown
speaker, out-of-range speed or malformed JSON. The OpenAI routes answer in OpenAI's error shape.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, Union

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field

from voicetrain.serving.guard import describe_errors, detail_error, refuse
from voicetrain.serving.voices import ServedVoice, VoiceSet, load_voices  # noqa: F401  (load_voices: re-exported)

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
    stream: bool = Field(False, strict=True, description="Send the wav sentence by sentence as it is made "
                                                         "(chunked; the header's lengths say 'unknown').")


@dataclass
class AppState:
    voices: VoiceSet
    default_voice: str
    api_key: Optional[str]
    max_text_chars: int
    limiter: Any  # anyio.CapacityLimiter
    started: float = field(default_factory=time.time)


def create_app(voices: dict[str, Any] | VoiceSet, *, api_key: str | None = None, max_text_chars: int = MAX_TEXT_CHARS,
               workers: int = 2):
    """A FastAPI app serving ``voices`` ({request name: loaded Voice}, or a VoiceSet shared with the Wyoming
    server); the first one is the default.

    A voice is also reachable by its bundle name (``demo``) and NAME@VERSION (``demo@v2``)
    when those are unambiguous.
    """
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from voicetrain.serving.openai_api import add_openai_routes, is_openai_path, validation_error_response
    from voicetrain.serving.openai_api import error_response as openai_error

    voice_set = voices if isinstance(voices, VoiceSet) else VoiceSet(voices, replicas=workers)
    served = voice_set.by_name
    state = AppState(voice_set, voice_set.default, api_key or None, max_text_chars, anyio.CapacityLimiter(max(1, workers)))
    app = FastAPI(title="voicetrain", version=_version(), docs_url=None, redoc_url=None)
    app.state.vt = state

    error = detail_error

    def error_for(request: Request, status: int, detail: str, code: str | None = None, headers=None) -> JSONResponse:
        """voicetrain's ``{"detail"}`` shape, or OpenAI's on the OpenAI routes."""
        if is_openai_path(request.url.path):
            return openai_error(status, detail, None, code, headers=headers)
        return detail_error(status, detail, headers)

    body_limit = max_body_bytes(max_text_chars)

    @app.middleware("http")
    async def api_key_check(request: Request, call_next):
        refusal = await refuse(request, api_key=state.api_key, key_prefix="/v1/", limit=body_limit,
                               too_big=f"request body over {body_limit} bytes; the text limit is "
                                       f"{state.max_text_chars} characters")
        if refusal is not None:
            return error_for(request, refusal.status, refusal.detail, refusal.code, headers=refusal.headers)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if is_openai_path(request.url.path):
            return validation_error_response(errors, MAX_ERRORS_REPORTED)
        return JSONResponse({"detail": describe_errors(errors, MAX_ERRORS_REPORTED),
                             "errors": _jsonable(errors[:MAX_ERRORS_REPORTED])}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # 404/405 of the routing itself
        return error_for(request, exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    add_openai_routes(app, voice_set, state.limiter, max_text_chars)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "voices": len(voice_set), "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/v1/voices")
    async def list_voices():
        out = []
        for key in voice_set.keys:
            v = served[key].voice
            out.append({"voice": key, "name": getattr(v, "name", key), "version": getattr(v, "version", None),
                        "speakers": list(v.speakers), "sample_rate": v.sample_rate,
                        "default": key == state.default_voice})
        return {"voices": out}

    async def stream_wav(sv: ServedVoice, name: str, text: str, speaker, speed: float):
        """A chunked wav, one chunk per sentence; the first is made before answering, so errors are still 4xx."""
        from voicetrain.inference.synthesizer import UnknownSpeakerError
        from voicetrain.serving.audio_formats import pcm16, wav_header
        from voicetrain.text.tokenizer import NoSpeakableTextError

        try:
            chunks = sv.stream(text, speaker, speed)
            first = await anyio.to_thread.run_sync(next, chunks, None, limiter=state.limiter)
        except UnknownSpeakerError as e:
            return error(422, f"speaker: {e}")
        except NoSpeakableTextError as e:
            return error(422, f"text: {e}")

        async def body():
            yield wav_header(sv.sample_rate)
            chunk = first
            while chunk is not None:
                yield pcm16(chunk)
                chunk = await anyio.to_thread.run_sync(next, chunks, None, limiter=state.limiter)

        return StreamingResponse(body(), media_type="audio/wav",
                                 headers={"X-Voice": name, "X-Sample-Rate": str(sv.sample_rate)})

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
            return error(404, f"unknown voice {name!r}; available: {', '.join(voice_set.keys)} (GET /v1/voices)")
        speaker: Union[int, str, None] = req.speaker
        if req.stream:
            return await stream_wav(sv, name, req.text, speaker, req.speed)

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
          workers: int = 2, max_text_chars: int = MAX_TEXT_CHARS, log_level: str = "info",
          wyoming: str | None = None, http: bool = True, stop: threading.Event | None = None) -> None:
    """Load the voices (all registered voices at their latest version when ``refs`` is empty) and serve them:
    HTTP with uvicorn (unless ``http`` is False) and, with ``wyoming`` (tcp://HOST:PORT or unix://PATH), the
    Wyoming protocol in the same process and event loop, on the same loaded voices.

    Runs until interrupted (Ctrl-C, SIGTERM) or until ``stop`` is set (for callers that run it in a thread).
    """
    import asyncio

    import torch

    from voicetrain.registry.store import ModelStore

    if wyoming is not None:
        from voicetrain.serving.wyoming_server import check_uri

        check_uri(wyoming)  # a bad URI is an error before minutes of loading
    if not http and wyoming is None:
        raise ValueError("nothing to serve: --no-http needs --wyoming URI")
    # Each synthesis sets its own thread count (1) and restores the previous one; starting
    # from 1 keeps concurrent requests from flipping the process-wide count back and forth.
    torch.set_num_threads(1)

    st = store if isinstance(store, ModelStore) else ModelStore(store)
    if not refs:
        refs = st.names()
        if not refs:
            raise ValueError(f"no voices in {st.root}; add one with `voicetrain models add RUN --name NAME`")
    voices = VoiceSet(load_voices(refs, st), replicas=workers)
    asyncio.run(_serve(voices, host=host, port=port, api_key=api_key, workers=workers, max_text_chars=max_text_chars,
                       log_level=log_level, wyoming=wyoming, http=http, stop=stop))


async def _serve(voices: VoiceSet, *, host, port, api_key, workers, max_text_chars, log_level, wyoming, http,
                 stop) -> None:
    import asyncio

    import uvicorn

    async def stopped() -> None:
        while stop is None or not stop.is_set():
            await asyncio.sleep(0.2)

    wy = None
    if wyoming is not None:
        from voicetrain.serving.wyoming_server import start_wyoming

        wy = await start_wyoming(voices, wyoming, workers=workers)
    try:
        if http:
            app = create_app(voices, api_key=api_key, max_text_chars=max_text_chars, workers=workers)
            server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False))

            async def watch() -> None:
                await stopped()
                server.should_exit = True

            watcher = asyncio.ensure_future(watch())
            try:
                await server.serve()  # handles Ctrl-C and SIGTERM itself (in the main thread)
            finally:
                watcher.cancel()
        else:
            await stopped()  # Ctrl-C ends asyncio.run; SIGTERM ends the process
    finally:
        if wy is not None:
            await wy.stop()
