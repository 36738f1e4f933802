import pytest

from faregate.api import validate
from faregate.errors import InvalidRequest


def _chat(**fields: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "x"}], **fields}


def _user(content: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": content}]}


def _answered(tool_calls: object) -> dict[str, object]:
    """A conversation whose assistant turn made `tool_calls`."""
    assistant = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return {"model": "m", "messages": [{"role": "user", "content": "x"}, assistant]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "model"),
        ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "nope"}]}]},
            "messages[0].content[0]",
        ),
        (
            {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": True}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            "tools[0].function.name",
        ),
        # Shapes every adapter reads: each of these reached an adapter and failed it (a 500).
        (
            _chat(tools=[{"function": {"name": "f", "parameters": 5}}]),
            "tools[0].function.parameters",
        ),
        (_chat(response_format="json"), "response_format"),
        (_chat(response_format={"type": "yaml"}), "response_format.type"),
        (
            _chat(response_format={"type": "json_schema", "json_schema": 5}),
            "response_format.json_schema",
        ),
        (
            _chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
            "response_format.json_schema",
        ),
        (
            _chat(
                response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": 5}}
            ),
            "response_format.json_schema.schema",
        ),
        (_chat(stream=True, stream_options="x"), "stream_options"),
        (
            _chat(tools=[{"function": {"name": "f", "description": 5}}]),
            "tools[0].function.description",
        ),
        (_user([{"type": "text"}]), "messages[0].content[0].text"),
        (_user([{"type": "file", "file": 5}]), "messages[0].content[0].file"),
        (
            _user([{"type": "input_audio", "input_audio": "x"}]),
            "messages[0].content[0].input_audio",
        ),
        (_answered("x"), "messages[1].tool_calls"),
        (_answered([5]), "messages[1].tool_calls[0]"),
        (
            _answered([{"id": "a", "function": {"name": "f", "arguments": {}}}]),
            "messages[1].tool_calls[0]",
        ),
        (_answered([{"function": {"name": "f", "arguments": "{}"}}]), "messages[1].tool_calls[0]"),
        (_chat(metadata=[1]), "metadata"),
    ],
)
def test_invalid_chat_requests_name_the_bad_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate.chat_request(body)
    assert info.value.param == param
    assert info.value.status == 400


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "reply"}},
        {"type": "json_schema", "json_schema": {"name": "reply", "schema": {}, "strict": True}},
    ],
)
def test_every_response_format_openai_takes_is_taken(response_format: dict) -> None:
    assert validate.chat_request(_chat(response_format=response_format)) == "m"


def test_a_conversation_with_tool_calls_and_every_part_kind_is_taken() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    parts = [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
    ]
    body = _answered([call])
    body["messages"] += [  # type: ignore[operator]
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        {"role": "user", "content": parts},
    ]
    assert validate.chat_request(body) == "m"


def test_a_valid_chat_request_keeps_unknown_fields() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "logprobs": True,
        "some_vendor_field": {"a": 1},
    }
    assert validate.chat_request(body) == "m"
    assert body["some_vendor_field"] == {"a": 1}


def test_nulls_the_sdks_send_for_unset_options_mean_the_default() -> None:
    """The openai SDK types these Optional; null was a 400."""
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": None}
    assert validate.chat_request(chat) == "m" and "stream" not in chat
    image = {"model": "m", "prompt": "p", "size": None, "response_format": None, "quality": None}
    assert validate.images_request(image) == "m"
    assert image == {"model": "m", "prompt": "p"}
    for quality in ("xhigh", "max"):  # the GPT image models' newer qualities
        assert validate.images_request({"model": "m", "prompt": "p", "quality": quality}) == "m"


# '\u00b2' (superscript two) passes str.isdigit but not int(): it used to be a 500.
@pytest.mark.parametrize("size", ["1024", "0x10", "axb", "99999x10", 5, "\u00b2x\u00b2"])
def test_image_sizes_must_be_width_x_height(size: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate.images_request({"model": "m", "prompt": "p", "size": size})
    assert info.value.param == "size"


def test_embeddings_need_input() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate.embeddings_request({"model": "m"})
    assert info.value.param == "input"
