import pytest

from faregate.api import validate
from faregate.errors import InvalidRequest


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
    ],
)
def test_invalid_chat_requests_name_the_bad_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate.chat_request(body)
    assert info.value.param == param
    assert info.value.status == 400


def test_a_valid_chat_request_keeps_unknown_fields() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "logprobs": True,
        "some_vendor_field": {"a": 1},
    }
    assert validate.chat_request(body) == "m"
    assert body["some_vendor_field"] == {"a": 1}


@pytest.mark.parametrize("size", ["1024", "0x10", "axb", "99999x10", 5])
def test_image_sizes_must_be_width_x_height(size: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate.images_request({"model": "m", "prompt": "p", "size": size})
    assert info.value.param == "size"


def test_embeddings_need_input() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate.embeddings_request({"model": "m"})
    assert info.value.param == "input"
