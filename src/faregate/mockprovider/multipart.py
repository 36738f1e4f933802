"""Multipart form bodies (OpenAI's audio uploads), read in memory with aiohttp's reader:
text fields as strings (a repeated name as a list), file parts as bytes."""

from __future__ import annotations

from typing import Any

from aiohttp import BodyPartReader, web

from faregate.mockprovider.dialects import MockError

MAX_FILE_BYTES = 25 * 1024 * 1024  # OpenAI's upload limit


async def read_form(request: web.Request) -> dict[str, Any]:
    body: dict[str, Any] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or not part.name:
            raise MockError(400, "Could not parse multipart form.")
        if part.filename is not None:
            data = bytearray()
            while chunk := await part.read_chunk():
                data += chunk
                if len(data) > MAX_FILE_BYTES:
                    raise MockError(413, "Maximum content size limit exceeded.", param=part.name)
            body[part.name] = bytes(data)
            continue
        value = await part.text()
        previous = body.get(part.name)
        if previous is None:
            body[part.name] = value
        else:
            body[part.name] = (
                [*previous, value] if isinstance(previous, list) else [previous, value]
            )
    return body
