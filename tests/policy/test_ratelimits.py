"""Rate limits as the gateway sees them: rules from config, one Permit per request, OpenAI
headers, token true-up, concurrency slots."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faregate.config import ConfigError
from faregate.policy import (
    Limits,
    RateLimiter,
    RateLimitExceeded,
    Subject,
    parse_rate_limits,
)
from faregate.policy.durations import format_reset
from faregate.store.counters import CounterStore, CounterStoreUnavailable, MemoryCounterStore

ALICE = Subject(key_id="k1", team_id="design", customer_id="acme", tags=("batch", "eu"))


def limiter(
    store: CounterStore, *rules: dict[str, object], lease_ttl_s: float = 900
) -> RateLimiter:
    return RateLimiter(store, parse_rate_limits({"rules": list(rules), "lease_ttl_s": lease_ttl_s}))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0201, "21ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3723.5, "1h2m3.5s")],
)
def test_reset_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


async def test_requests_past_the_rpm_are_refused_with_retry_after(store: CounterStore) -> None:
    rl = limiter(store, {"id": "keys", "scope": "key", "rpm": 3})
    for _ in range(3):
        await rl.check(ALICE, "gpt-4o")
    with pytest.raises(RateLimitExceeded) as refused:
        await rl.check(ALICE, "gpt-4o")
    error = refused.value
    assert (error.status, error.type, error.code) == (
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
    )
    assert 19 <= int(error.headers["Retry-After"]) <= 20
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert "requests per minute" in error.message
    other = await rl.check(Subject(key_id="k2"), "gpt-4o")
    assert other.headers()["x-ratelimit-remaining-requests"] == "2"


async def test_permit_headers_report_the_tightest_limit(store: CounterStore) -> None:
    rl = limiter(
        store,
        {"id": "keys", "scope": "key", "rpm": 100, "tpm": 10_000},
        {"id": "team", "scope": "team", "rpm": 10, "tpm": 50_000},
    )
    headers = (await rl.check(ALICE, "gpt-4o", est_tokens=1000)).headers()
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert headers["x-ratelimit-reset-requests"] == "6s"
    assert headers["x-ratelimit-limit-tokens"] == "10000"
    assert headers["x-ratelimit-remaining-tokens"] == "9000"
    assert headers["x-ratelimit-reset-tokens"] == "6s"


async def test_tokens_are_reserved_up_front_and_trued_up(store: CounterStore) -> None:
    rl = limiter(store, {"id": "keys", "scope": "key", "tpm": 1000})
    permit = await rl.check(ALICE, "m", est_tokens=800)
    with pytest.raises(RateLimitExceeded):
        await rl.check(ALICE, "m", est_tokens=300)
    await permit.finish(actual_tokens=100)
    await permit.finish(actual_tokens=100)  # a second finish changes nothing
    assert (await rl.check(ALICE, "m", est_tokens=850)).headers()[
        "x-ratelimit-remaining-tokens"
    ] == "50"


async def test_tpm_admits_exactly_the_configured_tokens_then_refills() -> None:
    clock = Clock()
    rl = limiter(MemoryCounterStore(clock=clock), {"id": "keys", "scope": "key", "tpm": 10_000})
    for _ in range(10):
        await (await rl.check(ALICE, "m", est_tokens=1000)).finish(1000)
    with pytest.raises(RateLimitExceeded) as refused:
        await rl.check(ALICE, "m", est_tokens=1000)
    assert refused.value.headers["Retry-After"] == "6"
    clock.now += 6
    await rl.check(ALICE, "m", est_tokens=1000)


async def test_an_overrun_is_charged_so_the_next_requests_wait() -> None:
    clock = Clock()
    rl = limiter(MemoryCounterStore(clock=clock), {"id": "keys", "scope": "key", "tpm": 1000})
    await (await rl.check(ALICE, "m", est_tokens=100)).finish(actual_tokens=1600)
    with pytest.raises(RateLimitExceeded):
        await rl.check(ALICE, "m", est_tokens=1)
    clock.now += 37
    await rl.check(ALICE, "m", est_tokens=1)


async def test_a_request_larger_than_the_tpm_is_refused_without_retry_after(
    store: CounterStore,
) -> None:
    rl = limiter(store, {"id": "keys", "scope": "key", "tpm": 1000})
    with pytest.raises(RateLimitExceeded) as refused:
        await rl.check(ALICE, "m", est_tokens=1001)
    assert "Request too large" in refused.value.message
    assert "Retry-After" not in refused.value.headers


async def test_concurrency_slots_are_held_until_finish(store: CounterStore) -> None:
    rl = limiter(store, {"id": "team", "scope": "team", "max_concurrent": 2})
    first = await rl.check(ALICE, "m")
    await rl.check(ALICE, "m")
    with pytest.raises(RateLimitExceeded) as refused:
        await rl.check(ALICE, "m")
    assert refused.value.headers["Retry-After"] == "1"
    await first.finish()
    await rl.check(ALICE, "m")


async def test_a_refusal_consumes_nothing_anywhere(store: CounterStore) -> None:
    rl = limiter(
        store,
        {"id": "keys", "scope": "key", "rpm": 5, "max_concurrent": 1},
        {"id": "team", "scope": "team", "tpm": 100},
    )
    with pytest.raises(RateLimitExceeded):
        await rl.check(ALICE, "m", est_tokens=500)
    permit = await rl.check(ALICE, "m", est_tokens=10)
    assert permit.headers()["x-ratelimit-remaining-requests"] == "4"
    assert permit.headers()["x-ratelimit-remaining-tokens"] == "90"


async def test_a_keys_own_limits_replace_the_default_rule_only(store: CounterStore) -> None:
    rl = limiter(
        store,
        {"id": "keys", "scope": "key", "rpm": 1, "tpm": 500},
        {"id": "k1-special", "scope": "key", "match": "k1", "rpm": 5},
    )
    own = {"key": Limits(rpm=3)}
    permits = [await rl.check(ALICE, "m", est_tokens=100, own=own) for _ in range(3)]
    assert permits[-1].headers()["x-ratelimit-remaining-tokens"] == "200"  # tpm still applies
    with pytest.raises(RateLimitExceeded):
        await rl.check(ALICE, "m", own=own)


async def test_model_rules_filter_and_count_per_model(store: CounterStore) -> None:
    rl = limiter(
        store,
        {"id": "per-model", "scope": "team", "model": "*", "rpm": 1},
        {"id": "gpt4", "scope": "global", "model": ["gpt-4o"], "rpm": 2},
    )
    await rl.check(ALICE, "gpt-4o")
    await rl.check(ALICE, "mini")
    with pytest.raises(RateLimitExceeded):
        await rl.check(ALICE, "mini")
    await rl.check(Subject(team_id="other"), "gpt-4o")
    with pytest.raises(RateLimitExceeded):
        await rl.check(Subject(team_id="third"), "gpt-4o")


async def test_tag_rules_count_each_tag(store: CounterStore) -> None:
    rl = limiter(store, {"id": "tags", "scope": "tag", "match": ["batch"], "rpm": 1})
    await rl.check(ALICE, "m")
    await rl.check(Subject(key_id="k9", tags=("eu",)), "m")
    with pytest.raises(RateLimitExceeded):
        await rl.check(Subject(key_id="k9", tags=("batch",)), "m")


async def test_no_matching_rule_admits_with_no_headers(store: CounterStore) -> None:
    rl = limiter(store, {"id": "team", "scope": "team", "match": "other", "rpm": 1})
    permit = await rl.check(ALICE, "m", est_tokens=10)
    assert permit.headers() == {}
    await permit.finish(5)


async def test_concurrent_checks_admit_exactly_the_rpm(store: CounterStore) -> None:
    rl = limiter(store, {"id": "keys", "scope": "key", "rpm": 37, "max_concurrent": 150})

    async def attempt() -> bool:
        try:
            permit = await rl.check(ALICE, "m")
        except RateLimitExceeded:
            return False
        await permit.finish()
        return True

    results = await asyncio.gather(*(attempt() for _ in range(100)))
    assert sum(results) == 37


async def test_concurrent_checks_admit_exactly_the_tokens_that_fit(store: CounterStore) -> None:
    # 100 requests of 1,000 tokens at once on a 37,500 tpm: 37 fit, the 38th does not.
    rl = limiter(store, {"id": "keys", "scope": "key", "tpm": 37_500})

    async def attempt() -> bool:
        try:
            await rl.check(ALICE, "m", est_tokens=1000)
        except RateLimitExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt() for _ in range(100)))
    assert sum(results) == 37


async def test_concurrent_checks_take_exactly_the_concurrency_slots(store: CounterStore) -> None:
    rl = limiter(store, {"id": "team", "scope": "team", "max_concurrent": 7})
    permits = []

    async def attempt() -> bool:
        try:
            permits.append(await rl.check(ALICE, "m"))
        except RateLimitExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt() for _ in range(50)))
    assert sum(results) == 7
    await asyncio.gather(*(p.finish() for p in permits))
    again = await asyncio.gather(*(attempt() for _ in range(50)))
    assert sum(again) == 7  # every slot came back, and no more


@pytest.mark.parametrize(
    "section",
    [
        {"rules": [{"id": "x", "scope": "planet", "rpm": 1}]},
        {"rules": [{"id": "x", "scope": "key"}]},
        {"rules": [{"id": "x", "scope": "key", "rpm": 0}]},
        {"rules": [{"id": "x", "scope": "key", "rpm": "10"}]},
        {"rules": [{"id": "x", "scope": "key", "rpm": 1}, {"id": "x", "scope": "team", "rpm": 1}]},
    ],
)
def test_bad_rules_are_config_errors(section: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        parse_rate_limits(section)


async def test_a_store_failure_during_admission_takes_no_slot() -> None:
    class Failing(MemoryCounterStore):
        async def admit(self, specs: Any, leases: Any = (), now: float | None = None) -> Any:
            raise CounterStoreUnavailable("down")

        def admit_plan(self, *args: Any) -> Any:
            raise CounterStoreUnavailable("down")

    store = Failing()
    rl = limiter(store, {"id": "keys", "scope": "key", "rpm": 5, "max_concurrent": 1})
    with pytest.raises(CounterStoreUnavailable):
        await rl.check(ALICE, "m")
    assert await store.in_flight("rl:keys:key:k1:conc") == 0


async def test_a_slot_refusal_consumes_no_rpm_and_an_rpm_refusal_takes_no_slot(
    store: CounterStore,
) -> None:
    rl = limiter(
        store,
        {"id": "keys", "scope": "key", "max_concurrent": 1},
        {"id": "team", "scope": "team", "rpm": 2},
    )
    first = await rl.check(ALICE, "m")
    with pytest.raises(RateLimitExceeded) as full:
        await rl.check(ALICE, "m")
    assert "concurrent" in full.value.message
    assert full.value.headers["x-ratelimit-remaining-requests"] == "1"
    await first.finish()
    second = await rl.check(ALICE, "m")  # the refused request left the team's rpm alone
    await second.finish()
    with pytest.raises(RateLimitExceeded) as limited:
        await rl.check(ALICE, "m")
    assert "requests per minute" in limited.value.message
    assert await store.in_flight("rl:keys:key:k1:conc") == 0


async def test_requests_refused_by_their_own_rpm_never_crowd_out_a_shared_slot(
    store: CounterStore,
) -> None:
    rl = limiter(
        store,
        {"id": "team", "scope": "team", "max_concurrent": 1},
        {"id": "keys", "scope": "key", "rpm": 1},
    )
    await (await rl.check(ALICE, "m")).finish()  # k1 has used its one request a minute
    other = Subject(key_id="k2", team_id="design")

    async def attempt(subject: Subject) -> bool:
        try:
            await rl.check(subject, "m")  # held, never finished: the team's one slot
        except RateLimitExceeded:
            return False
        return True

    tries = [ALICE] * 30 + [other] + [ALICE] * 30
    admitted = await asyncio.gather(*(attempt(s) for s in tries))
    assert admitted == [s is other for s in tries]


@pytest.mark.parametrize("lease_ttl_s", [-1, "soon", True])
def test_a_bad_lease_ttl_is_a_config_error(lease_ttl_s: object) -> None:
    with pytest.raises(ConfigError):
        parse_rate_limits({"rules": [], "lease_ttl_s": lease_ttl_s})


# The in-process store admits a plan in one step (`admit_plan`); the limiter falls back to
# `admit` when it refuses. Both ways must judge, report and leave the counters alike.
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("check"), st.integers(0, 120), st.booleans()),
        st.tuples(
            st.just("finish"), st.integers(0, 40), st.one_of(st.none(), st.integers(-5, 150))
        ),
        st.tuples(st.just("wait"), st.integers(0, 30_000), st.just(None)),
    ),
    max_size=60,
)


async def _replay(quick: bool, steps: list[tuple[str, int, Any]]) -> list[Any]:
    clock = Clock()
    store = MemoryCounterStore(clock=clock)
    rl = limiter(
        store,
        {"id": "keys", "scope": "key", "rpm": 3, "tpm": 300, "max_concurrent": 4},
        {"id": "teams", "scope": "team", "tpm": 400},
        {"id": "tags", "scope": "tag", "rpm": 5, "max_concurrent": 2},
        lease_ttl_s=20,
    )
    if not quick:
        rl._quick = None
    seen: list[Any] = []
    permits: list[Any] = []
    for i, (what, number, extra) in enumerate(steps):
        if what == "check":
            try:
                permit = await rl.check(ALICE, "m", number, lease_id=f"r{i % 7 if extra else i}")
            except RateLimitExceeded as refused:
                seen.append((refused.message, refused.headers))
            else:
                permits.append(permit)
                seen.append(permit.headers())
        elif what == "finish" and permits:
            await permits[number % len(permits)].finish(extra)
        else:
            clock.now += number / 1000
        seen.append((dict(store._rates), {k: dict(v) for k, v in store._leases.items()}))
    return seen


@settings(max_examples=200, deadline=None)
@given(_STEPS)
def test_a_plan_admitted_in_one_step_is_judged_as_admit_judges_it(
    steps: list[tuple[str, int, Any]],
) -> None:
    assert asyncio.run(_replay(True, steps)) == asyncio.run(_replay(False, steps))


async def test_the_in_process_store_admits_a_plan_in_one_step() -> None:
    store = MemoryCounterStore()
    rl = limiter(store, {"id": "keys", "scope": "key", "rpm": 5, "max_concurrent": 1})
    assert rl._quick is store
    called: list[str] = []
    real = store.admit

    async def admit(*args: Any, **kwargs: Any) -> Any:
        called.append("admit")
        return await real(*args, **kwargs)

    store.admit = admit  # type: ignore[method-assign]
    permit = await rl.check(ALICE, "m")
    assert called == []  # the one-step path
    with pytest.raises(RateLimitExceeded):
        await rl.check(ALICE, "m")  # the slot is taken: `admit` says why
    assert called == ["admit"]
    await permit.finish()
    await rl.check(ALICE, "m")
    assert called == ["admit"]


def test_a_plan_naming_a_counter_twice_takes_the_general_path() -> None:
    from faregate.policy.ratelimit_rules import Applied
    from faregate.policy.ratelimits import _Plan

    limits = Limits(rpm=5, tpm=100, max_concurrent=2)
    once = _Plan.of([Applied("a", "key", "rl:a:key:k1", limits)], 900)
    assert once.one_step and once.quick_tokens == 100
    twice = _Plan.of([Applied("a", "key", "rl:a:key:k1", limits)] * 2, 900)
    assert not twice.one_step  # `admit` sees the repeats


async def test_a_concurrency_cap_alone_is_admitted_in_one_step() -> None:
    store = MemoryCounterStore()
    rl = limiter(store, {"id": "keys", "scope": "key", "max_concurrent": 1})
    permit = await rl.check(ALICE, "m")
    assert type(permit).__name__ == "_PlanPermit" and permit.headers() == {}
    with pytest.raises(RateLimitExceeded, match="at most 1 at a time"):
        await rl.check(ALICE, "m")
    await permit.finish()
    await (await rl.check(ALICE, "m")).finish()
    assert await store.in_flight("rl:keys:key:k1:conc") == 0
