"""OpenAI `POST /v1/audio/transcriptions`: a multipart WAV upload in, a deterministic transcript
out in the requested `response_format` (json, text, verbose_json, srt, vtt). The duration is
the WAV header's (stdlib `wave`); whisper models report it as usage seconds rounded up, as
OpenAI does, gpt-4o models report tokens (10 audio tokens a second, plus the prompt's).
"""

from __future__ import annotations

import io
import math
import wave
from typing import Any

from aiohttp import web

from faregate.mockprovider import checks
from faregate.mockprovider.dialects import MockError
from faregate.mockprovider.pipeline import Call, json_response
from faregate.mockprovider.tokens import count_tokens, word_pieces

FORMATS = frozenset({"json", "text", "verbose_json", "srt", "vtt"})
TOKEN_FORMATS = frozenset({"json", "text"})  # what gpt-4o-transcribe models accept
AUDIO_TOKENS_PER_SECOND = 10


async def transcriptions(call: Call) -> web.StreamResponse:
    body = call.body
    model = checks.required_str(body, "model")
    audio = body.get("file")
    if not isinstance(audio, bytes) or not audio:
        raise MockError(400, "'file' is a required property.", param="file")
    fmt = body.get("response_format") or "json"
    if fmt not in FORMATS:
        raise MockError(400, f"'response_format' must be one of {sorted(FORMATS)}.",
                        param="response_format")  # fmt: skip
    by_tokens = model.startswith("gpt-4o")
    if by_tokens and fmt not in TOKEN_FORMATS:
        raise MockError(
            400,
            f"response_format '{fmt}' is not compatible with model '{model}'.",
            param="response_format",
            code="unsupported_value",
        )
    duration = wav_seconds(audio)
    text = "".join(word_pieces(call.behaviour.output_tokens)).strip()
    await call.pause()
    if fmt == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    if fmt in ("srt", "vtt"):
        return web.Response(text=subtitles(fmt, text, duration), content_type="text/plain")
    usage = _usage(model, body, text, duration)
    if fmt == "json":
        return json_response({"text": text, "usage": usage})
    return json_response(_verbose(body, text, duration, usage))


def wav_seconds(audio: bytes) -> float:
    try:
        with wave.open(io.BytesIO(audio)) as wav:
            return float(wav.getnframes()) / float(wav.getframerate())
    except (wave.Error, EOFError, ZeroDivisionError):
        raise MockError(
            400,
            "Audio file might be corrupted or unsupported (the mock reads WAV only).",
            param="file",
            code="invalid_value",
        ) from None


def _usage(model: str, body: dict[str, Any], text: str, duration: float) -> dict[str, Any]:
    if not model.startswith("gpt-4o"):
        return {"type": "duration", "seconds": math.ceil(duration)}
    prompt = body.get("prompt")
    text_tokens = count_tokens(prompt) if isinstance(prompt, str) else 0
    audio_tokens = math.ceil(duration * AUDIO_TOKENS_PER_SECOND)
    output = count_tokens(text)
    return {
        "type": "tokens",
        "input_tokens": text_tokens + audio_tokens,
        "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        "output_tokens": output,
        "total_tokens": text_tokens + audio_tokens + output,
    }


def _verbose(
    body: dict[str, Any], text: str, duration: float, usage: dict[str, Any]
) -> dict[str, Any]:
    segment = {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": round(duration, 2),
        "text": " " + text,
        "tokens": list(range(50364, 50364 + count_tokens(text))),
        "temperature": 0.0,
        "avg_logprob": -0.25,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.01,
    }
    language = body.get("language")
    return {
        "task": "transcribe",
        "language": language if isinstance(language, str) and language else "english",
        "duration": round(duration, 2),
        "text": text,
        "segments": [segment],
        "usage": usage,
    }


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitles(fmt: str, text: str, duration: float) -> str:
    """One cue over the whole audio, as SubRip or WebVTT."""
    if fmt == "srt":
        return f"1\n{_timestamp(0, ',')} --> {_timestamp(duration, ',')}\n{text}\n\n"
    return f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(duration, '.')}\n{text}\n\n"
