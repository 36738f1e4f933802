"""The transcription wire mapping: the form sent upstream and the usage read back, from the
host's report when there is one, else estimated and marked."""

from __future__ import annotations

import io
import wave
from decimal import Decimal
from typing import Any

import orjson

from faregate.audio import AudioUpload
from faregate.providers.openai_audio import (
    last_cue_end,
    transcription_form,
    transcription_result,
)
from faregate.usage import Usage


def _wav(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * round(seconds * 8000))
    return out.getvalue()


def _body(audio: bytes, **fields: Any) -> dict[str, Any]:
    return {"model": "whisper", "file": AudioUpload(audio, "a.wav", "audio/wav"), **fields}


def test_the_hosts_duration_report_is_the_usage() -> None:
    raw = orjson.dumps({"text": "hi", "usage": {"type": "duration", "seconds": 12}})
    result = transcription_result(raw, _body(_wav(1)))
    assert result.usage == Usage(seconds=Decimal(12))


def test_a_token_report_is_token_usage() -> None:
    usage = {"type": "tokens", "input_tokens": 30, "output_tokens": 5, "total_tokens": 35}
    result = transcription_result(orjson.dumps({"text": "hi", "usage": usage}), _body(_wav(1)))
    assert result.usage == Usage(input_tokens=30, output_tokens=5)


def test_without_a_report_the_wav_header_is_the_estimate_and_it_is_marked() -> None:
    result = transcription_result(orjson.dumps({"text": "hi"}), _body(_wav(2.2)))
    assert result.usage == Usage(seconds=Decimal(3), estimated=True)
    assert isinstance(result.body, dict)
    assert result.body["usage"] == {"type": "duration", "seconds": 3}


def test_verbose_json_duration_outranks_the_bound_of_compressed_audio() -> None:
    raw = orjson.dumps({"text": "hi", "duration": 61.2, "segments": []})
    result = transcription_result(raw, _body(b"mp3" * 1000, response_format="verbose_json"))
    assert result.usage == Usage(seconds=Decimal(62), estimated=True)


def test_subtitles_of_compressed_audio_are_timed_by_their_last_cue() -> None:
    srt = "1\n00:00:00,000 --> 00:00:04,000\nhi\n\n2\n00:01:04,000 --> 00:01:09,250\nyo\n\n"
    result = transcription_result(srt.encode(), _body(b"mp3" * 1000, response_format="srt"))
    assert result.body == srt
    assert result.usage == Usage(seconds=Decimal(70), estimated=True)
    assert last_cue_end("WEBVTT\n\n00:00.000 --> 00:02.500\nhi\n") == Decimal("2.5")


def test_text_is_asked_as_json_and_handed_back_as_text() -> None:
    body = _body(_wav(1), response_format="text", language="en", **{"include[]": ["a", "b"]})
    form = transcription_form(body, "whisper-1")
    fields = [(options["name"], value) for options, _, value in form._fields]
    assert ("response_format", "json") in fields and ("model", "whisper-1") in fields
    assert [v for n, v in fields if n == "include[]"] == ["a", "b"]
    raw = orjson.dumps({"text": "hello", "usage": {"type": "duration", "seconds": 1}})
    result = transcription_result(raw, body)
    assert result.body == "hello\n" and result.usage == Usage(seconds=Decimal(1))
