from __future__ import annotations

import random
from decimal import Decimal

import pytest

from faregate.routing.experiments import ExperimentStats


def test_report_sums_each_arm_exactly() -> None:
    stats = ExperimentStats()
    for latency in (0.1, 0.2, 0.3, 0.4):
        stats.record(
            "e1",
            "control",
            latency=latency,
            cost=Decimal("0.0125"),
            price=Decimal("0.02"),
            input_tokens=100,
            output_tokens=50,
        )
    stats.record("e1", "control", error=True, latency=9.0)
    stats.record("e1", "flux", latency=1.0, cost=Decimal("0.04"), price=Decimal("0.06"))
    report = stats.report("e1")
    assert report["experiment"] == "e1"
    control, flux = report["arms"]
    assert control == {
        "arm": "control",
        "requests": 5,
        "errors": 1,
        "error_rate": 0.2,
        "cost": "0.0500",
        "price": "0.08",
        "cost_per_request": "0.0100",
        "input_tokens": 400,
        "output_tokens": 200,
        "latency_p50_ms": 250.0,  # the failed request's latency is left out
        "latency_p95_ms": 385.0,
    }
    assert flux["arm"] == "flux" and flux["requests"] == 1 and flux["latency_p95_ms"] == 1000.0


def test_latency_reservoir_stays_bounded_and_representative() -> None:
    stats = ExperimentStats(reservoir_size=500, rng=random.Random(9))
    for i in range(20_000):
        stats.record("e", "a", latency=(i % 1000) / 1000)
    arm = stats.report("e")["arms"][0]
    assert arm["requests"] == 20_000
    assert arm["latency_p50_ms"] == pytest.approx(500, abs=60)
    assert arm["latency_p95_ms"] == pytest.approx(950, abs=30)


def test_unknown_experiment_has_no_arms() -> None:
    assert ExperimentStats().report("nope") == {"experiment": "nope", "arms": []}
