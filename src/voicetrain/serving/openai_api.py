"""OpenAI-compatible speech: POST /v1/audio/speech and GET /v1/models, on the HTTP server's app.

Any client written for OpenAI's text-to-speech (the official ``openai`` package with
``base_url="http://HOST:PORT/v1"``) speaks with a voicetrain voice. The mapping:

- ``model`` is a served voice: the name it is served under (``demo``, ``demo@v2``) or its
  bundle name. OpenAI's own model names (``tts-1``, ``tts-1-hd``, ``gpt-4o-mini-tts``...)
  mean the server's default voice (the first one served), unless a voice has that name.
- ``voice`` is a speaker of that voice: a speaker name, a speaker id as digits, or
  ``default``; OpenAI's stock voice names (``alloy``, ``nova``...) and the model's own name
  mean its default speaker (a fine-tuned voice's own, else the first: Synthesizer.speaker_id). With one of
  OpenAI's model names, ``voice`` may instead name a served voice (its default speaker): clients
  that fix the model still reach every voice.
  OpenAI's custom-voice object ``{"id": ...}`` is read as that name.
- ``response_format``: wav, pcm (16-bit signed little-endian mono at the voice's own rate,
  given in the X-Sample-Rate header; OpenAI's pcm is always 24 kHz), flac, mp3, opus (Ogg);
  default mp3 as OpenAI's. aac is refused: nothing in the dependency set encodes it.
- ``speed`` 0.25-4.0; ``instructions`` is accepted and ignored (a trained voice has no
  instructions to follow); ``stream_format`` ``audio`` (default) or ``sse``.

wav and pcm stream: the response is chunked, one chunk per sentence, and the first sentence's
audio leaves before the next sentence is made. The other formats are encoded once, whole.
``stream_format: "sse"`` sends the same bytes as server-sent events
``{"type": "speech.audio.delta", "audio": BASE64}`` and ends with ``speech.audio.done``.

Errors are OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad
value, 401 for a missing or wrong key, 404 for an unknown model, 413 for an oversized body.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Annotated, Any, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from voicetrain.serving.audio_formats import FORMATS, MEDIA_TYPES, STREAMABLE, encode, pcm16, wav_header
from voicetrain.serving.voices import ServedVoice, VoiceSet

log = logging.getLogger(__name__)

OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-03-20", "gpt-4o-mini-tts-2025-12-15")
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")
STREAM_FORMATS = ("audio", "sse")
MIN_SPEED, MAX_SPEED = 0.25, 4.0
OPENAI_PATHS = ("/v1/audio/", "/v1/models")


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PATHS)


class VoiceRef(BaseModel):
    """OpenAI's custom-voice object ``{"id": "..."}``."""

    model_config = ConfigDict(extra="forbid")
    id: StrictStr = Field(..., max_length=200)


class SpeechRequest(BaseModel):
    """Body of POST /v1/audio/speech (OpenAI's fields)."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr = Field(..., max_length=200)
    input: StrictStr
    voice: Union[Annotated[str, Field(strict=True, max_length=200)], VoiceRef]
    response_format: StrictStr = Field("mp3", max_length=40)
    # strict: JSON true is not a speed; ints are still accepted
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, strict=True)
    stream_format: StrictStr = Field("audio", max_length=40)
    instructions: Optional[StrictStr] = Field(None, max_length=4096)


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_response(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                   headers: Optional[dict] = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(OpenAIError(status, message, param, code).body(), status_code=status, headers=headers)


def validation_error_response(errors: list[dict], max_reported: int):
    """Pydantic's errors as one OpenAI 400: the first problem's field is ``param``."""
    problems, param = [], None
    for e in errors[:max_reported]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        field = loc[0] if loc else None
        param = param or field
        if e.get("type") == "extra_forbidden":
            problems.append(f"Unrecognized request argument supplied: {'.'.join(loc)}")
        elif e.get("type") == "json_invalid":
            problems.append(f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})")
        else:
            problems.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - max_reported} more)" if len(errors) > max_reported else ""
    return error_response(400, "invalid request: " + "; ".join(problems) + more, param, "invalid_value")


def resolve(voices: VoiceSet, model: str, voice: str) -> tuple[ServedVoice, Union[str, int, None]]:
    """(served voice, speaker) for OpenAI's ``model`` and ``voice``; see the module's docstring."""
    sv = voices.get(model)
    if sv is None:
        if model not in OPENAI_MODELS:
            raise OpenAIError(404, f"The model {model!r} does not exist: serve it (`voicetrain serve NAME`) or use one "
                                   f"of {', '.join(voices.keys)} (GET /v1/models)", "model", "model_not_found")
        named = voices.get(voice)
        if named is not None:
            return named, None
        sv = voices.get(None)
    speakers = sv.speakers
    if sv.synth.knows_speaker(voice):
        return sv, voice
    if voice.isdigit() and int(voice) < max(len(speakers), 1):
        return sv, int(voice)
    if voice == "default" or voice.lower() in OPENAI_VOICES or voice == model:
        return sv, None
    raise OpenAIError(400, f"unknown voice {voice!r} for model {model!r}: use one of its speakers "
                           f"({', '.join(speakers) or 'none'}), a speaker id, or 'default' "
                           f"(OpenAI's voice names also mean the default speaker)", "voice", "invalid_value")


def check_request(req: SpeechRequest, max_text_chars: int) -> None:
    if len(req.input) > max_text_chars:
        raise OpenAIError(400, f"input is {len(req.input)} characters; the limit is {max_text_chars}: "
                               "split it into several requests", "input", "string_above_max_length")
    if not req.input.strip():
        raise OpenAIError(400, "input is empty: send something to say", "input", "invalid_value")
    try:
        req.input.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone UTF-16 surrogate ("\\ud800") is not text
        raise OpenAIError(400, f"input: invalid Unicode at character {e.start} (a lone surrogate); send UTF-8 text",
                          "input", "invalid_value") from None
    fmt = req.response_format
    if fmt not in FORMATS:
        why = (": nothing in voicetrain's dependencies encodes AAC" if fmt == "aac" else "")
        raise OpenAIError(400, f"response_format {fmt!r} is not supported{why}; use one of {', '.join(FORMATS)}",
                          "response_format", "invalid_value")
    if req.stream_format not in STREAM_FORMATS:
        raise OpenAIError(400, f"stream_format {req.stream_format!r} is not supported; use 'audio' or 'sse'",
                          "stream_format", "invalid_value")


def _created(voice: Any) -> int:
    """The bundle's creation time as Unix seconds (OpenAI's ``created``), 0 when unknown."""
    created = getattr(voice, "info", {}).get("created") if isinstance(getattr(voice, "info", None), dict) else None
    try:
        return int(datetime.fromisoformat(str(created)).timestamp())
    except (TypeError, ValueError):
        return 0


def model_object(key: str, sv: ServedVoice, default: bool) -> dict:
    v = sv.voice
    language = getattr(sv.synth.tokenizer.text_cfg, "language", None)
    return {"id": key, "object": "model", "created": _created(v), "owned_by": "voicetrain",
            "name": getattr(v, "name", key), "version": getattr(v, "version", None), "speakers": sv.speakers,
            "sample_rate": sv.sample_rate, "language": language, "default": default}


def add_openai_routes(app, voices: VoiceSet, limiter, max_text_chars: int) -> None:
    """Add POST /v1/audio/speech, GET /v1/models and GET /v1/models/{model} to ``app``."""
    import anyio
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    from voicetrain.inference.synthesizer import UnknownSpeakerError
    from voicetrain.text.tokenizer import NoSpeakableTextError

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list",
                "data": [model_object(k, voices.served[k], k == voices.default) for k in voices.keys]}

    @app.get("/v1/models/{model:path}")
    async def retrieve_model(model: str):
        sv = voices.get(model)
        if sv is None:
            raise OpenAIError(404, f"The model {model!r} does not exist; served: {', '.join(voices.keys)}",
                              "model", "model_not_found")
        return model_object(model, sv, sv is voices.get(None))

    @app.post("/v1/audio/speech")
    async def speech(req: SpeechRequest):
        check_request(req, max_text_chars)
        voice = req.voice.id if isinstance(req.voice, VoiceRef) else req.voice
        sv, speaker = resolve(voices, req.model, voice)
        try:
            chunks: Iterator[np.ndarray] = sv.stream(req.input, speaker, req.speed)
        except UnknownSpeakerError as e:
            raise OpenAIError(400, f"voice: {e}", "voice", "invalid_value") from None

        async def next_chunk() -> Optional[np.ndarray]:
            return await anyio.to_thread.run_sync(next, chunks, None, limiter=limiter)

        t0 = time.perf_counter()
        try:  # the first sentence is made before answering: text with nothing to say is still a 400
            first = await next_chunk()
        except NoSpeakableTextError as e:
            raise OpenAIError(400, f"input: {e}", "input", "invalid_value") from None
        sr, fmt = sv.sample_rate, req.response_format
        headers = {"X-Voice": voices.key_of(sv), "X-Sample-Rate": str(sr),
                   "X-First-Chunk-Seconds": f"{time.perf_counter() - t0:.3f}"}

        async def audio_bytes() -> AsyncIterator[bytes]:
            chunk = first
            if fmt in STREAMABLE:
                if fmt == "wav":
                    yield wav_header(sr)
                while chunk is not None:
                    yield pcm16(chunk)
                    chunk = await next_chunk()
            else:
                whole = []
                while chunk is not None:
                    whole.append(chunk)
                    chunk = await next_chunk()
                yield encode(np.concatenate(whole), sr, fmt)

        if req.stream_format == "sse":
            async def events() -> AsyncIterator[bytes]:
                n = 0
                async for piece in audio_bytes():
                    n += len(piece)
                    yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode("ascii")})
                # no tokens are counted here; the fields are OpenAI's, the audio size is voicetrain's
                yield _sse({"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0,
                                                                   "total_tokens": 0}, "audio_bytes": n})

            return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
        if fmt in STREAMABLE:
            return StreamingResponse(audio_bytes(), media_type=MEDIA_TYPES[fmt], headers=headers)
        body = b"".join([piece async for piece in audio_bytes()])
        return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()
