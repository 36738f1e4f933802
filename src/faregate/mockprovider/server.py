"""Builds and runs the mock provider: the route registry, the in-process server used by tests
and benchmarks (`start_mock`), and the blocking entry point behind `faregate mock-provider`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

import yaml
from aiohttp import web

from faregate.mockprovider import (
    anthropic_messages,
    gemini,
    gemini_embed,
    models,
    openai_audio,
    openai_chat,
    openai_embeddings,
    openai_images,
    openai_moderations,
)
from faregate.mockprovider.config import MockConfig
from faregate.mockprovider.control import control_routes
from faregate.mockprovider.dialects import ANTHROPIC, GOOGLE, OPENAI
from faregate.mockprovider.pipeline import DEPLOYMENT_PREFIX, Endpoint, route_table
from faregate.mockprovider.state import STATE, MockState
from faregate.mockprovider.stats import MockStats

GEMINI = "/v1beta/models/{model}"
ENDPOINTS = (
    Endpoint("POST", "/v1/chat/completions", OPENAI, openai_chat.chat_completions),
    Endpoint("POST", "/v1/embeddings", OPENAI, openai_embeddings.embeddings),
    Endpoint("POST", "/v1/images/generations", OPENAI, openai_images.generations),
    Endpoint("POST", "/v1/moderations", OPENAI, openai_moderations.moderations),
    Endpoint("POST", "/v1/audio/transcriptions", OPENAI, openai_audio.transcriptions),
    Endpoint("GET", "/v1/models", OPENAI, models.list_models, gated=False),
    Endpoint("GET", openai_images.FILES_PATH, OPENAI, openai_images.image_file, gated=False),
    Endpoint("POST", "/v1/messages", ANTHROPIC, anthropic_messages.messages),
    Endpoint("POST", "/v1/messages/count_tokens", ANTHROPIC, anthropic_messages.count_tokens),
    Endpoint("POST", GEMINI + ":generateContent", GOOGLE, gemini.generate_content),
    Endpoint(
        "POST",
        GEMINI + ":streamGenerateContent",
        GOOGLE,
        gemini.stream_generate_content,
        streams=gemini.streams_sse,
    ),
    Endpoint("POST", GEMINI + ":embedContent", GOOGLE, gemini_embed.embed_content),
    Endpoint("POST", GEMINI + ":batchEmbedContents", GOOGLE, gemini_embed.batch_embed_contents),
)
MAX_BODY = 64 * 1024 * 1024
SHUTDOWN_TIMEOUT = 1.0


def build_mock_app(config: MockConfig | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[STATE] = MockState(config or MockConfig())
    app.add_routes(route_table(ENDPOINTS))
    app.add_routes(control_routes())
    return app


class MockServer:
    """A running mock provider. `config` is live: changes apply to the next request."""

    def __init__(self, runner: web.AppRunner, state: MockState, host: str, port: int) -> None:
        self._runner = runner
        self._state = state
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    @property
    def stats(self) -> MockStats:
        return self._state.stats

    @property
    def config(self) -> MockConfig:
        return self._state.config

    @config.setter
    def config(self, value: MockConfig) -> None:
        self._state.config = value
        self._state.dice.reset(value.seed)

    def url_for(self, deployment: str) -> str:
        """Base URL whose requests use `config.deployments[deployment]`."""
        return self.url + DEPLOYMENT_PREFIX.format(deployment=deployment)

    def reset(self) -> None:
        self._state.reset()

    async def close(self) -> None:
        self._state.closing.set()
        await self._runner.cleanup()

    async def __aenter__(self) -> MockServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_mock(
    config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> MockServer:
    """Start a mock provider on the running loop; port 0 picks a free port."""
    app = build_mock_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return MockServer(runner, app[STATE], host, int(bound))


def load_mock_config(path: str | None) -> MockConfig:
    """Read a YAML file: the mock config itself, or a file with a `mock_provider:` section."""
    if path is None:
        return MockConfig()
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the mock provider config must be a mapping")
    if "mock_provider" in data:
        data = data["mock_provider"] or {}
    return MockConfig.from_dict(data)


def run_mock(host: str, port: int, config_path: str | None = None) -> None:
    """Serve until interrupted (the `faregate mock-provider` command), on uvloop if present."""
    config = load_mock_config(config_path)
    web.run_app(
        build_mock_app(config),
        host=host,
        port=port,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        loop=_new_loop(),
        print=lambda *_: print(f"faregate mock provider listening on http://{host}:{port}"),
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
