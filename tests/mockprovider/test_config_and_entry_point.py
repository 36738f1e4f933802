"""MockConfig parsing, the token rule, the PNG encoder, and the blocking `run_mock` entry point."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from faregate.mockprovider import MockBehaviour, MockConfig, count_tokens
from faregate.mockprovider.png import solid_png
from faregate.mockprovider.server import load_mock_config
from tests.mockprovider.test_openai_other_routes import png_size


def test_count_tokens_is_a_quarter_of_the_characters_rounded_up() -> None:
    assert [count_tokens(t) for t in ("", "a", "abcd", "abcde", "x" * 400)] == [0, 1, 1, 2, 100]


def test_deployments_inherit_unset_fields_from_default() -> None:
    config = MockConfig.from_dict(
        {
            "seed": 7,
            "default": {"ttft": 0.2, "output_tokens": 50},
            "deployments": {"flaky": {"error_rate": 0.3}, "plain": None},
        }
    )
    assert config.seed == 7
    assert config.deployments["flaky"] == MockBehaviour(ttft=0.2, output_tokens=50, error_rate=0.3)
    assert config.deployments["plain"] == config.default
    assert config.behaviour_for("unknown") is config.default


@pytest.mark.parametrize(
    "data",
    [
        {"default": {"eror_rate": 0.1}},
        {"default": {"error_rate": 1.5}},
        {"default": {"error_rate": 0.6, "rate_limit_rate": 0.6}},
        {"default": {"output_tokens": 0}},
        {"default": {"ttft": -1}},
        {"seed": "x"},
        {"routes": {}},
    ],
)
def test_invalid_config_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MockConfig.from_dict(data)


def test_yaml_config_may_be_a_file_or_a_mock_provider_section(tmp_path: Path) -> None:
    plain = tmp_path / "mock.yaml"
    plain.write_text("default:\n  output_tokens: 5\n")
    section = tmp_path / "faregate.yaml"
    section.write_text("mock_provider:\n  deployments:\n    slow:\n      ttft: 1.5\n")
    assert load_mock_config(str(plain)).default.output_tokens == 5
    assert load_mock_config(str(section)).deployments["slow"].ttft == 1.5
    assert load_mock_config(None) == MockConfig()


def test_png_encoder_writes_exact_sizes_and_refuses_absurd_ones() -> None:
    assert png_size(solid_png(1, 1, (0, 0, 0))) == (1, 1)
    assert png_size(solid_png(1000, 3, (1, 2, 3))) == (1000, 3)
    with pytest.raises(ValueError):
        solid_png(0, 10, (0, 0, 0))


async def test_run_mock_serves_until_stopped(tmp_path: Path, unused_port: int) -> None:
    config = tmp_path / "mock.yaml"
    config.write_text("default:\n  output_tokens: 3\n")
    port = unused_port
    code = f"from faregate.mockprovider import run_mock; run_mock('127.0.0.1', {port}, {str(config)!r})"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        reply = await _post_when_up(f"http://127.0.0.1:{port}/v1/chat/completions", body)
        assert reply["usage"]["completion_tokens"] == 3
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


async def _post_when_up(url: str, body: dict[str, object]) -> dict[str, object]:
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.post(url, json=body) as resp:
                    return dict(await resp.json())
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
