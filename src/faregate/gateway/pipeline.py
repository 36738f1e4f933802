"""The life of one request: resolve, guard, estimate, hold, route, call, settle, meter.

Each endpoint kind is one readable method. The upstream call goes through failover;
stages are settled in `finally`, so a provider error, a timeout or a client disconnect
releases every hold exactly once. Nothing here waits on a database write.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from faregate.auth.errors import ModelNotAllowed
from faregate.config import Deployment
from faregate.errors import FaregateError, InvalidRequest
from faregate.gateway import transcriptions
from faregate.gateway.call import Call
from faregate.gateway.stages import Stage, StageRun
from faregate.providers.base import (
    ChatResult,
    EmbeddingsResult,
    ImagesResult,
    ModerationsResult,
    Provider,
    ProviderError,
    Relayed,
    StreamState,
    TranscriptionResult,
    delta_chars,
)
from faregate.tokens import count_chat_input_tokens, count_text_tokens_of
from faregate.usage import Usage

T = TypeVar("T")


class Pricer(Protocol):
    def route_request(self, call: Call) -> Any:
        """What routing needs to know about this call."""

    def settle(self, call: Call) -> None:
        """Fill call.cost and call.price from call.usage and call.deployment."""


class Meter(Protocol):
    def record(self, call: Call) -> None: ...


class ResponseCache(Protocol):
    def wanted(self, call: Call) -> bool:
        """Whether the cache has anything to do for this call (lookup, store, recorder)."""

    async def lookup(self, call: Call) -> Any | None:
        """A hit (result, or an async iterator of chunks for a stream), or None."""

    async def store(self, call: Call, result: Any) -> None: ...

    def recorder(self, call: Call) -> Any | None:
        """Collects a stream's chunks (add(chunk), await finish(call)), or None."""


def _partial_usage(call: Call, state: StreamState) -> Usage:
    """A stream cut before the provider's final report, marked estimated. Input: what the
    provider reported (Anthropic and Gemini do early in the stream), else the expected
    count. Output: the larger of what the provider reported so far and the text relayed to
    the client (its characters / 4), plus the reasoning the provider reported. The text's
    estimate never takes the output past the bound the call's holds and budget reservations
    were taken for (`est_output_tokens`: max_tokens, else the model's limit): a text of
    dense tokens counted at four characters each did (a stream cut near its end billed 161
    tokens of a max_tokens of 100, past its hold and past hard budgets)."""
    reported = state.reported or Usage()
    relayed = count_text_tokens_of(state.relayed_text_chars())
    bound = call.est_output_tokens - reported.reasoning_tokens
    if call.est_output_tokens and relayed > bound:
        relayed = max(bound, 0)  # what the provider reported stays, whatever the bound
    visible = max(reported.visible_output_tokens, relayed)
    return Usage(
        input_tokens=reported.input_tokens or call.est_input_tokens,
        output_tokens=visible + reported.reasoning_tokens,
        cached_input_tokens=reported.cached_input_tokens if reported.input_tokens else 0,
        cache_write_tokens=reported.cache_write_tokens if reported.input_tokens else 0,
        cache_write_1h_tokens=reported.cache_write_1h_tokens if reported.input_tokens else 0,
        reasoning_tokens=reported.reasoning_tokens,
        estimated=True,
    )


class Gateway:
    def __init__(
        self,
        *,
        router: Any,
        upstreams: dict[str, Provider],
        pricer: Pricer,
        meter: Meter,
        failover: Callable[..., Awaitable[Any]],
        health: Any,
        stages: list[Stage] | None = None,
        cache: ResponseCache | None = None,
        request_timeout: float = 600.0,
        max_attempts: int = 5,
    ):
        self.router = router
        self.upstreams = upstreams
        self.pricer = pricer
        self.meter = meter
        self.failover = failover
        self.health = health
        self.stages = stages or []
        self.cache = cache
        self.request_timeout = request_timeout
        self.max_attempts = max_attempts

    # -- shared steps -------------------------------------------------------------

    def _resolve(self, call: Call, kind: str) -> None:
        group = self.router.resolve(call.model)
        if group.kind != kind:
            raise InvalidRequest(
                f"Model {call.model!r} does not serve {kind}.",
                param="model",
                code="model_not_supported",
            )
        if not call.principal.allows(call.model) and not call.principal.allows(group.name):
            raise ModelNotAllowed(f"This API key may not use model {call.model!r}.", param="model")
        call.group = group

    def _provider(self, deployment: Deployment) -> Provider:
        return self.upstreams[deployment.provider]

    async def _with_failover(
        self,
        call: Call,
        attempt: Callable[[Deployment], Awaitable[T]],
        *,
        first_chunk: bool = False,
    ) -> T:
        route = self.pricer.route_request(call)
        group = call.group
        # The arm the request is assigned, whatever the health: a request that fails
        # everywhere (or finds every deployment unavailable) is counted for it.
        assigned = self.router.assigned_arm(group, route)
        if assigned is not None:
            call.experiment, call.arm = assigned.experiment, assigned.arm
        try:
            outcome = await self.failover(
                self.router.plan(group, route),
                attempt,
                health=self.health,
                deadline=time.monotonic() + self.request_timeout,
                max_attempts=self.max_attempts,
                context_plan=self.router.context_plan(group, route),
                first_chunk=first_chunk,
                tokens=route.input_tokens + route.output_tokens,  # for deployments' tpm
            )
        except FaregateError as err:
            call.attempts, call.deployment = err.attempts, err.last_deployment
            raise
        call.deployment = outcome.deployment
        call.attempts = outcome.attempts
        if assigned is not None:  # counted for the arm that served it
            served = self.router.experiment_arm(outcome.deployment)
            if served is not None:
                call.experiment, call.arm = served.experiment, served.arm
        return outcome.result  # type: ignore[no-any-return]

    def _failed(self, call: Call, err: FaregateError) -> None:
        """Mark the call failed; its error answer says how many upstream calls it made."""
        call.fail(err.status, err.code)
        err.headers = {**err.headers, "x-faregate-attempts": str(call.attempts)}

    def _finish(self, call: Call) -> None:
        call.finished = time.perf_counter()
        if call.usage is not None and not call.cache_hit:
            self.pricer.settle(call)
        call.response_headers.update(self._headers(call))

    @staticmethod
    def _headers(call: Call) -> dict[str, str]:
        headers = {
            "x-faregate-request-id": call.request_id,
            "x-request-id": call.request_id,  # where the openai SDK reads `_request_id`
            "x-faregate-attempts": str(call.attempts),
        }
        if call.deployment is not None:
            headers["x-faregate-deployment"] = call.deployment.id
        if call.finished is not None:
            headers["x-faregate-cost"] = format(call.cost, "f")
            headers["x-faregate-price"] = format(call.price, "f")
        if call.cache_hit:
            headers["x-faregate-cache"] = "hit"
        return headers

    def _cache_for(self, call: Call) -> ResponseCache | None:
        """The response cache, if it has anything to do for this call (asked once the stages
        have run, as the lookup always was)."""
        cache = self.cache
        return cache if cache is not None and cache.wanted(call) else None

    async def _unary(
        self, call: Call, kind: str, invoke: Callable[[Provider, Deployment], Awaitable[T]]
    ) -> T:
        self._resolve(call, kind)
        run = StageRun(self.stages)
        try:
            await run.enter(call)  # limits, moderation, estimate, holds
            cache = self._cache_for(call)
            cached = await cache.lookup(call) if cache is not None else None
            if cached is not None:
                result: T = cached
            else:
                result = await self._with_failover(call, lambda d: invoke(self._provider(d), d))
                call.usage = result.usage  # type: ignore[attr-defined]
            self._finish(call)
            if cache is not None and not call.cache_hit:
                await cache.store(call, result)
            return result
        except FaregateError as err:
            self._failed(call, err)
            call.finished = time.perf_counter()
            call.response_headers.update(self._headers(call))
            raise
        finally:
            await run.exit(call)
            self.meter.record(call)

    # -- endpoints ------------------------------------------------------------------

    async def chat(self, call: Call) -> ChatResult:
        return await self._unary(call, "chat", lambda p, d: p.chat(call.body, d.model))

    async def embeddings(self, call: Call) -> EmbeddingsResult:
        return await self._unary(call, "embeddings", lambda p, d: p.embeddings(call.body, d.model))

    async def images(self, call: Call) -> ImagesResult:
        return await self._unary(call, "images", lambda p, d: p.images(call.body, d.model))

    async def moderations(self, call: Call) -> ModerationsResult:
        return await self._unary(
            call,
            "moderations",
            lambda p, d: p.moderations(call.body, d.model),  # type: ignore[attr-defined]
        )

    async def transcriptions(self, call: Call) -> TranscriptionResult:
        transcriptions.prepare(call)
        return await self._unary(
            call, transcriptions.KIND, lambda p, d: transcriptions.transcribe(p, d, call)
        )

    async def count_tokens(self, call: Call) -> int:
        """The input tokens of a chat request, without running it. Counted upstream when the
        deployment that would serve it now can count (Anthropic's count_tokens, free of
        charge), else faregate's own expected count (`tokens`). An upstream that cannot
        answer hands the count to the next deployment in line, then to the estimate; one
        that refuses the request (a 4xx) is the answer. Nothing is metered, held or billed,
        and `call.deployment` names the deployment that counted, if any."""
        self._resolve(call, "chat")
        call.est_input_tokens = count_chat_input_tokens(call.body)
        for deployment in self.router.plan(call.group, self.pricer.route_request(call)):
            count = getattr(self._provider(deployment), "count_tokens", None)
            if count is None:
                break  # it would serve the request, and counts as faregate does
            try:
                tokens: int = await count(call.body, deployment.model)
            except ProviderError as err:
                if err.retryable:
                    continue
                raise
            call.deployment = deployment
            return tokens
        return call.est_input_tokens

    async def chat_stream(self, call: Call, *, relay: bool = False) -> AsyncIterator[Any]:
        """Yield chunks. The first `__anext__` does everything up to the first chunk, so the
        caller can still answer an error with a proper status before sending headers.

        `relay`: the caller also takes `Relayed` runs (OpenAI's SSE as the upstream sent
        it, for a client that asked for usage) where the provider can relay them; else
        every item is a chunk dict."""
        self._resolve(call, "chat")
        run = StageRun(self.stages)
        state = call.stream_state = StreamState(relay=relay)
        stream: AsyncIterator[dict[str, Any]] | None = None
        unjudged: Deployment | None = None  # connected; health awaits the stream's outcome
        try:
            await run.enter(call)
            cache = self._cache_for(call)
            cached = await cache.lookup(call) if cache is not None else None
            if cached is not None:
                call.response_headers.update(self._headers(call))
                async for replayed in cached:
                    yield replayed
                call.finished = time.perf_counter()
                return

            async def connect(
                deployment: Deployment,
            ) -> tuple[AsyncIterator[Any], Any]:
                upstream = self._provider(deployment).chat_stream(
                    call.body, deployment.model, state
                )
                try:
                    first = await upstream.__anext__()
                except BaseException:
                    await upstream.aclose()  # type: ignore[attr-defined]
                    raise
                return upstream, first

            stream, first = await self._with_failover(call, connect, first_chunk=True)
            unjudged = call.deployment
            call.ttft = time.perf_counter() - call.started
            call.response_headers.update(self._headers(call))
            recorder = cache.recorder(call) if cache is not None else None
            chunk = first
            while True:
                relayed = type(chunk) is Relayed
                if recorder:
                    for one in chunk.chunks() if relayed else (chunk,):
                        recorder.add(one)
                yield chunk
                # Counted once the client came back for more: the chunk was handed to it.
                if relayed:
                    state.relayed_runs.append(chunk)
                else:
                    state.relayed_chars += delta_chars(chunk)
                try:
                    chunk = await stream.__anext__()  # type: ignore[union-attr]
                except StopAsyncIteration:
                    break
            if unjudged is not None:
                self.health.observe(unjudged.id)
                unjudged = None
            call.usage = state.usage
            call.scratch["finish_reason"] = state.finish_reason
            self._finish(call)
            if recorder:
                await recorder.finish(call)
        except ProviderError as err:
            # After the first chunk nothing is retried: the caller ends the stream with an
            # error event; before it, the error surfaces as an HTTP status. A break after
            # the first chunk counts against the deployment's breaker like any failure.
            if unjudged is not None:
                self.health.observe(unjudged.id, error=err)
                unjudged = None
            self._failed(call, err)
            call.usage = state.usage
            raise
        except FaregateError as err:
            self._failed(call, err)
            raise
        except GeneratorExit:
            call.fail(499, "client_disconnected")
            call.usage = state.usage
            raise
        finally:
            if unjudged is not None:  # no outcome (client gone, local error): free the probe
                self.health.release(unjudged.id)
            if stream is not None:
                await stream.aclose()  # type: ignore[attr-defined]
            if call.finished is None:
                call.finished = time.perf_counter()
                if call.usage is None and stream is not None:  # cut after it connected
                    call.usage = _partial_usage(call, state)
                if call.usage is not None:
                    self.pricer.settle(call)
            await run.exit(call)
            self.meter.record(call)
