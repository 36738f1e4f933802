"""The Anthropic adapter's reasoning_effort and effort: the sampling Claude refuses while
thinking left out when the gateway turned thinking on, `output_config.effort` carried, and
reasoning_effort as adaptive thinking at an effort on a provider whose models think so."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from faregate.config import ConfigError
from faregate.providers.anthropic import AnthropicProvider
from faregate.providers.anthropic_request import messages_request
from faregate.providers.base import ProviderError
from tests.providers.wire import endpoint

HELLO: Any = [{"role": "user", "content": "x"}]
SCHEMA: Any = {"type": "object", "properties": {"a": {"type": "string"}}}
JSON_SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "out", "schema": SCHEMA}}


def _request(body: dict[str, Any], *, adaptive: bool = False) -> dict[str, Any]:
    return messages_request(
        {"messages": HELLO, **body},
        "claude-sonnet-4-5",
        default_max_tokens=4096,
        stream=False,
        adaptive=adaptive,
    )


# -- sampling while thinking ------------------------------------------------------------


@pytest.mark.parametrize("adaptive", [False, True])
def test_thinking_from_reasoning_effort_leaves_out_the_sampling_claude_refuses(
    adaptive: bool,
) -> None:
    body = {"reasoning_effort": "low", "temperature": 0.2, "top_k": 5, "top_p": 0.5}
    request = _request(body, adaptive=adaptive)
    assert "thinking" in request
    assert "temperature" not in request and "top_k" not in request
    assert request["top_p"] == 0.95  # the least Claude takes while thinking


def test_sampling_claude_takes_while_thinking_is_kept() -> None:
    request = _request({"reasoning_effort": "low", "temperature": 1, "top_p": 0.97})
    assert (request["temperature"], request["top_p"]) == (1, 0.97)
    # OpenAI's temperature scale goes to 2; Claude's most random is 1, which thinking takes.
    assert _request({"reasoning_effort": "low", "temperature": 1.7})["temperature"] == 1


def test_sampling_is_sent_as_asked_without_thinking_or_with_the_clients_own() -> None:
    asked = {"temperature": 0.2, "top_k": 5, "top_p": 0.5}
    assert _request({**asked, "reasoning_effort": "none"}).items() >= asked.items()
    # `thinking` sent by the client itself: Claude's own 400 tells it what to change.
    thinking = {"type": "enabled", "budget_tokens": 1024}
    assert _request({**asked, "thinking": thinking}).items() >= asked.items()


# -- output_config.effort -----------------------------------------------------------------


def test_output_config_effort_reaches_claude_with_the_response_format() -> None:
    request = _request({"output_config": {"effort": "medium"}, "response_format": JSON_SCHEMA})
    assert request["output_config"] == {
        "effort": "medium",
        "format": {"type": "json_schema", "schema": SCHEMA},
    }
    assert "thinking" not in request
    assert "output_config" not in _request({"output_config": {"format": "ignored"}})


@pytest.mark.parametrize(
    ("effort", "sent"),
    [
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "xhigh"),
        ("max", "max"),
    ],
)
def test_adaptive_providers_get_reasoning_effort_as_adaptive_thinking_at_that_effort(
    effort: str, sent: str
) -> None:
    request = _request({"reasoning_effort": effort, "max_tokens": 1000}, adaptive=True)
    assert request["thinking"] == {"type": "adaptive"}
    assert request["output_config"] == {"effort": sent}
    assert "reasoning_effort" not in request


def test_adaptive_effort_none_sends_neither_and_the_clients_own_effort_wins() -> None:
    request = _request({"reasoning_effort": "none"}, adaptive=True)
    assert "thinking" not in request and "output_config" not in request
    body = {"reasoning_effort": "high", "output_config": {"effort": "low"}}
    assert _request(body, adaptive=True)["output_config"] == {"effort": "low"}


def test_an_unknown_effort_is_a_400_on_adaptive_providers_too() -> None:
    with pytest.raises(ProviderError) as info:
        _request({"reasoning_effort": "extreme"}, adaptive=True)
    assert (info.value.status, info.value.param) == (400, "reasoning_effort")


async def test_the_providers_thinking_option_says_how_reasoning_effort_thinks() -> None:
    async with aiohttp.ClientSession() as session:
        default = AnthropicProvider(endpoint("anthropic"), session, None)  # type: ignore[arg-type]
        adaptive = AnthropicProvider(
            endpoint("anthropic", thinking="adaptive"),
            session,
            None,  # type: ignore[arg-type]
        )
        assert (default.adaptive, adaptive.adaptive) == (False, True)
        with pytest.raises(ConfigError, match="thinking"):
            AnthropicProvider(endpoint("anthropic", thinking="always"), session, None)  # type: ignore[arg-type]
