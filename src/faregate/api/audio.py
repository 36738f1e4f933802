"""OpenAI `POST /v1/audio/transcriptions`: the multipart form read with aiohttp's own reader,
in memory (the audio is never written to disk), checked, handed to the gateway, and its
answer rendered as JSON or as text (text, srt, vtt)."""

from __future__ import annotations

from typing import Any

from aiohttp import BodyPartReader, web

from faregate.api.common import REQUEST_ID, bearer_key, json_response, new_request_id
from faregate.api.state import SERVICES
from faregate.audio import MAX_AUDIO_BYTES, AudioUpload
from faregate.errors import InvalidRequest, PayloadTooLarge
from faregate.gateway.call import Call
from faregate.providers.openai_audio import RESPONSE_FORMATS, response_format

MAX_FIELD_BYTES = 64 * 1024  # a text field (prompt, language, …)
_FORM_OVERHEAD = 1024 * 1024  # room for the other fields and the part headers
_READ = 256 * 1024


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The audio file is larger than the {MAX_AUDIO_BYTES // (1024 * 1024)} MB limit.",
        param="file",
    )


async def _read_part(part: BodyPartReader, limit: int, error: PayloadTooLarge) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_READ):
        size += len(chunk)
        if size > limit:
            raise error
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: web.Request) -> dict[str, Any]:
    """The form's fields (a repeated name becomes a list) and `file` as an AudioUpload."""
    if request.content_type != "multipart/form-data":
        raise InvalidRequest(
            "Send the audio as multipart/form-data with a 'file' part.",
            param="file",
            code="invalid_content_type",
        )
    if (request.content_length or 0) > MAX_AUDIO_BYTES + _FORM_OVERHEAD:
        raise _too_large()
    try:
        return await _read_parts(request)
    except ValueError:  # aiohttp's word for a body that is not the multipart it says it is
        raise InvalidRequest(
            "The multipart/form-data body is malformed (no boundary, or a part cut short).",
            param="file",
            code="invalid_multipart",
        ) from None


async def _read_parts(request: web.Request) -> dict[str, Any]:
    body: dict[str, Any] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or not part.name:
            raise InvalidRequest("Nested or unnamed form parts are not accepted.", param=None)
        if part.name == "file":
            data = await _read_part(part, MAX_AUDIO_BYTES, _too_large())
            body["file"] = AudioUpload(
                data=data,
                filename=part.filename or "audio",
                content_type=part.headers.get("Content-Type") or "application/octet-stream",
            )
            continue
        too_long = PayloadTooLarge(f"The form field {part.name!r} is too long.", param=part.name)
        value = (await _read_part(part, MAX_FIELD_BYTES, too_long)).decode("utf-8", "replace")
        previous = body.get(part.name)
        if previous is None:
            body[part.name] = value
        else:
            body[part.name] = (
                [*previous, value] if isinstance(previous, list) else [previous, value]
            )
    return body


def check(body: dict[str, Any]) -> str:
    """The model asked for; a 400 naming the field for anything missing or malformed."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest(
            "'model' is required.", param="model", code="missing_required_parameter"
        )
    upload = body.get("file")
    if not isinstance(upload, AudioUpload) or not upload.data:
        raise InvalidRequest(
            "'file' is required and must not be empty.",
            param="file",
            code="missing_required_parameter",
        )
    if response_format(body) not in RESPONSE_FORMATS:
        raise InvalidRequest(
            f"'response_format' must be one of {sorted(RESPONSE_FORMATS)}.",
            param="response_format",
            code="invalid_value",
        )
    if "temperature" in body:
        try:
            temperature = float(body["temperature"])
        except (TypeError, ValueError):
            temperature = -1.0
        if not 0 <= temperature <= 1:
            raise InvalidRequest(
                "'temperature' must be a number between 0 and 1.",
                param="temperature",
                code="invalid_value",
            )
    if str(body.get("stream", "false")).lower() == "true":
        raise InvalidRequest(
            "Streamed transcriptions are not supported; leave 'stream' unset.",
            param="stream",
            code="unsupported_value",
        )
    return model.strip()


def _tags(request: web.Request, key_tags: tuple[str, ...]) -> tuple[str, ...]:
    header = request.headers.get("X-Faregate-Tags") or ""
    tags = [*key_tags, *(t.strip() for t in header.split(",") if t.strip())]
    return tuple(dict.fromkeys(tags))


async def transcriptions(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    request[REQUEST_ID] = request_id = new_request_id()
    principal = await services.keys.authenticate(bearer_key(request))
    body = await read_form(request)
    model = check(body)
    call = Call(
        request_id=request_id,
        principal=principal,
        kind="transcriptions",
        model=model,
        body=body,
        tags=_tags(request, principal.tags),
        request_headers={
            k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-faregate-")
        },
    )
    result = await services.gateway.transcriptions(call)
    if isinstance(result.body, str):
        return web.Response(
            text=result.body, content_type="text/plain", headers=call.response_headers
        )
    return json_response(result.body, headers=call.response_headers)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
