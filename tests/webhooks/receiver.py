"""A webhook receiver on loopback for tests: records every delivery, can fail on purpose,
and checks signatures the way a Lago client does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from faregate.webhooks import verify
from tests.conftest import free_port


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return orjson.loads(self.body)

    @property
    def unique_key(self) -> str:
        return self.headers["X-Lago-Unique-Key"]

    def signed_by(self, hmac_key: str) -> bool:
        return self.headers.get("X-Lago-Signature-Algorithm") == "hmac" and verify(
            hmac_key, self.body, self.headers["X-Lago-Signature"]
        )


@dataclass
class Receiver:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)  # every attempt, failed or not
    fail_next: int = 0  # answer the next N attempts with 500
    delay: float = 0.0  # seconds to wait before answering (a slow receiver)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.headers.get("x-test-accepted") == "1"]

    def of_type(self, webhook_type: str) -> list[Delivery]:
        return [d for d in self.accepted if d.json["webhook_type"] == webhook_type]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        async with asyncio.timeout(timeout):
            while len(self.accepted) < count:
                self.received.clear()
                await self.received.wait()
        return self.accepted

    async def _handle(self, request: web.Request) -> web.Response:
        headers = dict(request.headers)
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        failing = self.fail_next > 0
        if failing:
            self.fail_next -= 1
        else:
            headers["x-test-accepted"] = "1"
        self.deliveries.append(Delivery(headers, body))
        self.received.set()
        return web.Response(status=500 if failing else 200)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
