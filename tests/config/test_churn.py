"""The churn shape in the config (issue 13, item 6): its fields, its bounds, what it excludes."""

from __future__ import annotations

from typing import Any

from spikewatch.config import ChurnConfig
from spikewatch.config.scenario import MAX_CHURN_ATTEMPTS
from tests.config.test_model import build, config, problems, scenario


def churn(shape: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A scenario with a churn of 50/s for 10 s; ``shape`` adds to the churn, ``fields``
    to the scenario."""
    return scenario(spike=None, churn={"rate": 50, "duration": "10s", **(shape or {})}, **fields)


def test_a_churn_is_a_rate_for_a_duration() -> None:
    """rate and duration read as numbers and durations; 500 connections, none capped."""
    s = build(config(scenarios=[churn()])).scenarios[0]
    assert isinstance(s.load, ChurnConfig)
    assert (s.load.rate, s.load.duration, s.load.max_in_flight) == (50.0, 10.0, None)
    assert (s.load.total_connections, s.load.peak_connections, s.total_connections) == (
        500,
        500,
        500,
    )


def test_churn_values_are_checked_with_their_paths() -> None:
    """A rate ≤ 0 or past the bound, a duration of 0 and a max_in_flight of 0 are problems."""
    bad = scenario(spike=None, churn={"rate": 0, "duration": 0, "max_in_flight": 0})
    assert problems(config(scenarios=[bad])) == [
        "scenarios[0].churn.rate: must be > 0",
        "scenarios[0].churn.duration: must be > 0",
        "scenarios[0].churn.max_in_flight: must be ≥ 1",
    ]
    fast = scenario(spike=None, churn={"rate": 10_001, "duration": 1})
    assert problems(config(scenarios=[fast])) == ["scenarios[0].churn.rate: must be ≤ 10000"]
    missing = scenario(spike=None, churn={})
    assert problems(config(scenarios=[missing])) == [
        "scenarios[0].churn.rate: required",
        "scenarios[0].churn.duration: required",
    ]


def test_a_churns_total_is_bounded() -> None:
    """rate times duration past the per-run bound on attempts is a problem."""
    long = churn({"rate": 1000, "duration": "201s", "max_in_flight": 100})
    assert problems(config(scenarios=[long])) == [
        f"scenarios[0].churn: rate * duration is 201000 connections; at most"
        f" {MAX_CHURN_ATTEMPTS} per run"
    ]


def test_a_churn_is_one_of_the_three_shapes() -> None:
    """churn with spike or ramp is a problem, naming the shapes set."""
    both = scenario(churn={"rate": 1, "duration": 1})
    assert problems(config(scenarios=[both])) == [
        "scenarios[0]: set one of spike, ramp or churn, not spike and churn"
    ]
    ramp = {"steps": [1], "step_interval": 1}
    three = scenario(ramp=ramp, churn={"rate": 1, "duration": 1})
    assert problems(config(scenarios=[three])) == [
        "scenarios[0]: set one of spike, ramp or churn, not spike and ramp and churn"
    ]


def test_a_churns_peak_is_its_total_or_its_max_in_flight() -> None:
    """Without max_in_flight every connection counts toward limits.max_connections, as a
    spike's do; with it, only that many: a churn longer than the limit then fits."""
    limits = {"max_connections": 100}
    assert problems(config(limits=limits, scenarios=[churn(stable={"connections": 5})])) == [
        "scenarios[0]: opens 505 connections at its peak; with 4 kept for its probes that is"
        " more than limits.max_connections (100)"
    ]
    capped = build(config(limits=limits, scenarios=[churn({"max_in_flight": 90})])).scenarios[0]
    assert capped.total_connections == 90
    assert isinstance(capped.load, ChurnConfig)
    assert capped.load.total_connections == 500


def test_a_churn_holds_nothing() -> None:
    """hold and the dropped_held threshold mean nothing for connections that close."""
    assert problems(config(scenarios=[churn(hold="1s", thresholds={"dropped_held": 0})])) == [
        "scenarios[0].hold: must be 0 with churn: its connections close",
        "scenarios[0].thresholds.dropped_held: needs held spike connections",
    ]


def test_with_workers_a_churns_max_in_flight_is_shared_by_them() -> None:
    """Each worker takes a share of max_in_flight: fewer than prober.workers is a problem;
    without it, or with enough, a churn runs on workers."""
    data = config(prober={"workers": 3}, scenarios=[churn({"max_in_flight": 2})])
    assert problems(data) == [
        "scenarios[0].churn.max_in_flight: must be ≥ prober.workers (3): each worker takes"
        " its share of it"
    ]
    assert build(config(prober={"workers": 3}, scenarios=[churn({"max_in_flight": 3})]))
    assert build(config(prober={"workers": 3}, scenarios=[churn()]))
