"""OpenAI embeddings, images, moderations and the model list, through the official SDK."""

from __future__ import annotations

import base64
import math
import struct
import zlib

import aiohttp
import openai
import pytest

from faregate.mockprovider import MockServer, count_tokens


def png_size(data: bytes) -> tuple[int, int]:
    """Parse and check a PNG's structure; return its IHDR width and height."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, idat = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        payload = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc
        chunks.append(kind)
        if kind == b"IDAT":
            idat += payload
        position += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    assert (depth, colour_type) == (8, 2)
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return width, height


async def test_embeddings_are_deterministic_unit_vectors_with_counted_usage(
    openai_client: openai.AsyncOpenAI,
) -> None:
    texts = ["hello world", "another text"]
    first = await openai_client.embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    again = await openai_client.embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    assert [d.index for d in first.data] == [0, 1]
    assert len(first.data[0].embedding) == 1536
    assert first.data[0].embedding == again.data[0].embedding
    assert first.data[0].embedding != first.data[1].embedding
    assert math.isclose(sum(v * v for v in first.data[0].embedding), 1.0, rel_tol=1e-9)
    assert first.usage.prompt_tokens == sum(count_tokens(t) for t in texts)
    assert first.usage.total_tokens == first.usage.prompt_tokens


async def test_embeddings_honour_dimensions_and_base64_encoding(
    openai_client: openai.AsyncOpenAI, mock: MockServer, http: aiohttp.ClientSession
) -> None:
    # The SDK asks for base64 by default and decodes it back to floats.
    decoded = await openai_client.embeddings.create(
        model="text-embedding-3-small", input="hello", dimensions=64
    )
    floats = await openai_client.embeddings.create(
        model="text-embedding-3-small", input="hello", dimensions=64, encoding_format="float"
    )
    assert len(decoded.data[0].embedding) == 64
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)
    body = {"model": "m", "input": "hello", "dimensions": 8, "encoding_format": "base64"}
    async with http.post(mock.url + "/v1/embeddings", json=body) as resp:
        raw = base64.b64decode((await resp.json())["data"][0]["embedding"])
    assert len(raw) == 8 * 4


async def test_embeddings_accept_token_arrays_and_count_each_token(
    openai_client: openai.AsyncOpenAI,
) -> None:
    reply = await openai_client.embeddings.create(
        model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]], encoding_format="float"
    )
    assert len(reply.data) == 2
    assert reply.usage.prompt_tokens == 5


async def test_embeddings_without_input_answer_400(openai_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.embeddings.create(model="text-embedding-3-small", input=[])
    assert caught.value.body["param"] == "input"


@pytest.mark.parametrize(
    ("inputs", "code"),
    [
        (["a"] * 2049, None),  # OpenAI's 2,048 inputs a request
        ([[1] * 8193], "context_length_exceeded"),  # 8,192 tokens an input
        ([[1] * 8000] * 38, "max_tokens_per_request"),  # 300,000 tokens a request
    ],
)
async def test_embeddings_past_openais_limits_answer_400(
    openai_client: openai.AsyncOpenAI, inputs: list[object], code: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.embeddings.create(model="text-embedding-3-small", input=inputs)
    assert caught.value.body["param"] == "input"
    assert caught.value.body["code"] == code
    at_limit = await openai_client.embeddings.create(
        model="text-embedding-3-small", input=["a"] * 2048, dimensions=8
    )
    assert len(at_limit.data) == 2048


async def test_images_are_valid_pngs_of_the_requested_size(
    openai_client: openai.AsyncOpenAI,
) -> None:
    reply = await openai_client.images.generate(
        model="dall-e-3", prompt="a red fox", size="256x128", n=2, response_format="b64_json"
    )
    assert len(reply.data) == 2
    assert reply.data[0].revised_prompt == "a red fox"
    assert png_size(base64.b64decode(reply.data[0].b64_json)) == (256, 128)
    assert reply.usage is None


async def test_image_urls_serve_the_png(
    openai_client: openai.AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    reply = await openai_client.images.generate(
        model="dall-e-2", prompt="a blue whale", size="64x48", response_format="url"
    )
    async with http.get(reply.data[0].url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert png_size(await resp.read()) == (64, 48)


async def test_gpt_image_models_report_token_usage(openai_client: openai.AsyncOpenAI) -> None:
    reply = await openai_client.images.generate(
        model="gpt-image-1", prompt="a lighthouse", size="1024x1024", quality="low"
    )
    assert reply.data[0].b64_json
    assert reply.usage.input_tokens == count_tokens("a lighthouse")
    assert reply.usage.output_tokens == 272
    assert reply.usage.total_tokens == reply.usage.input_tokens + 272


async def test_images_accept_steps_and_reject_bad_sizes(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/v1/images/generations"
    body = {
        "model": "sdxl",
        "prompt": "p",
        "size": "32x32",
        "steps": 30,
        "response_format": "b64_json",
    }
    async with http.post(url, json=body) as resp:
        assert resp.status == 200
    async with http.post(url, json={**body, "size": "big"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["param"] == "size"


async def test_moderation_flags_listed_words_only(openai_client: openai.AsyncOpenAI) -> None:
    reply = await openai_client.moderations.create(input=["I will attack the castle", "I like tea"])
    flagged, clean = reply.results
    assert flagged.flagged and flagged.categories.violence
    assert not clean.flagged and not clean.categories.violence
    assert reply.model == "omni-moderation-latest"


async def test_model_list_is_in_openai_or_anthropic_shape(
    openai_client: openai.AsyncOpenAI, mock: MockServer, http: aiohttp.ClientSession
) -> None:
    page = await openai_client.models.list()
    assert "gpt-4o" in [m.id for m in page.data]
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "k"}
    async with http.get(mock.url + "/v1/models", headers=headers) as resp:
        body = await resp.json()
    assert body["data"][0]["type"] == "model" and body["has_more"] is False
