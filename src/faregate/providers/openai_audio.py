"""OpenAI's `/audio/transcriptions` on the wire: the multipart form sent upstream (the client's
fields, in memory, with the provider's model id) and the usage read back. The host's own
report is the truth (`{"type": "duration", "seconds"}`, or tokens for gpt-4o-transcribe);
without one the seconds are estimated and marked, from the verbose_json `duration`, else the
WAV header, else the last subtitle cue, else the upload's bound (faregate.audio).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import orjson

from faregate.audio import AudioUpload, whole_seconds
from faregate.providers.base import TranscriptionResult
from faregate.providers.http import bad_response
from faregate.usage import Usage

JSON_FORMATS = frozenset({"json", "verbose_json"})
SUBTITLE_FORMATS = frozenset({"srt", "vtt"})
RESPONSE_FORMATS = JSON_FORMATS | SUBTITLE_FORMATS | {"text"}
_CUE_END = re.compile(r"-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})")


def response_format(body: dict[str, Any]) -> str:
    """The asked format, "json" when absent; a repeated field is no format (the API refuses)."""
    value = body.get("response_format")
    if value is None or value == "":
        return "json"
    return value if isinstance(value, str) else "repeated"


def transcription_form(body: dict[str, Any], model: str) -> aiohttp.FormData:
    """The client's form with the provider's model id. `text` is asked for as `json`, which
    carries the host's usage report (a text answer carries none); the gateway hands the
    client the text."""
    upload: AudioUpload = body["file"]
    form = aiohttp.FormData()
    form.add_field("file", upload.data, filename=upload.filename, content_type=upload.content_type)
    form.add_field("model", model)
    for name, value in body.items():
        if name in ("file", "model"):
            continue
        if name == "response_format" and value == "text":
            value = "json"
        for item in value if isinstance(value, list) else [value]:
            form.add_field(name, str(item))
    return form


def transcription_result(raw: bytes, body: dict[str, Any]) -> TranscriptionResult:
    fmt = response_format(body)
    if fmt in SUBTITLE_FORMATS:
        text = raw.decode("utf-8", errors="replace")
        return TranscriptionResult(body=text, usage=_estimate(body, None, text))
    data = orjson.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise bad_response("The upstream provider sent a transcription without text.")
    usage = usage_from_transcription(data.get("usage"))
    if usage is None:
        usage = _estimate(body, data.get("duration"), None)
        data["usage"] = {"type": "duration", "seconds": int(usage.seconds)}
    if fmt == "text":
        return TranscriptionResult(body=data["text"] + "\n", usage=usage)
    return TranscriptionResult(body=data, usage=usage)


def usage_from_transcription(raw: Any) -> Usage | None:
    """`{"type": "duration", "seconds"}` or `{"type": "tokens", "input_tokens", ...}`; None
    when the host reported neither."""
    if not isinstance(raw, dict):
        return None
    if raw.get("type") == "duration" and _number(raw.get("seconds")) is not None:
        return Usage(seconds=_number(raw.get("seconds")) or Decimal(0))
    if raw.get("type") == "tokens" and raw.get("input_tokens") is not None:
        return Usage(
            input_tokens=int(raw.get("input_tokens") or 0),
            output_tokens=int(raw.get("output_tokens") or 0),
        )
    return None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None


def _estimate(body: dict[str, Any], duration: Any, subtitles: str | None) -> Usage:
    """Seconds the host did not report, in whole seconds rounded up like OpenAI's."""
    upload: AudioUpload = body["file"]
    seconds = _number(duration)
    if seconds is None:
        seconds = upload.wav_seconds
    if seconds is None and subtitles is not None:
        seconds = last_cue_end(subtitles)
    if seconds is None:
        seconds = Decimal(upload.seconds_bound)
    return Usage(seconds=Decimal(whole_seconds(seconds)), estimated=True)


def last_cue_end(subtitles: str) -> Decimal | None:
    """The latest end time of an SRT or WebVTT cue (`--> 00:01:02,500`), in seconds."""
    ends = [
        int(h or 0) * 3600 + int(m) * 60 + int(s) + Decimal(f"0.{ms}")
        for h, m, s, ms in _CUE_END.findall(subtitles)
    ]
    return max(ends) if ends else None
