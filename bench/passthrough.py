"""The bare pass-through: the practical floor for a Python proxy on this machine.

An aiohttp server that forwards every request, path and body unchanged, to one upstream
through one pooled aiohttp ClientSession, and streams the answer back chunk by chunk.
No auth, no parsing, no metering: anything faregate adds is measured against this.

    python bench/passthrough.py --port 9200 --upstream http://127.0.0.1:9100
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def build_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=20 * 1024 * 1024)
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def open_session(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=1024, keepalive_timeout=30)
        app[session_key] = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=600)
        )

    async def close_session(app: web.Application) -> None:
        await app[session_key].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = upstream + request.path_qs
        async with app[session_key].request(request.method, url, data=body, headers=headers) as up:
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            if up.headers.get("Content-Type", "").startswith("text/event-stream"):
                response = web.StreamResponse(status=up.status, headers=out_headers)
                await response.prepare(request)
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            return web.Response(status=up.status, body=await up.read(), headers=out_headers)

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9100")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(
        build_app(args.upstream.rstrip("/")),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
    )


if __name__ == "__main__":
    main()
