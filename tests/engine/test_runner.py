"""Whole runs against real servers on loopback: phases, verdicts, recovery time."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme

from spikewatch.config import SpikewatchConfig
from spikewatch.core.outcomes import Outcome, RunResultKind
from spikewatch.engine import probes, runner
from spikewatch.engine.registry import PROBE_RESERVE
from spikewatch.engine.runner import Prober, RunReport, execute_run
from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.server import RunningTarget, start_reference_target
from tests import hostile, hostile_extra
from tests.builders import WELCOME, RunConfigs, make_prober
from tests.conftest import scaled

FAST_RECOVERY = {
    "probe_interval": "100ms",
    "consecutive": 3,
    "timeout": "5s",
    "tolerance": 0.5,
    "slack": "20ms",
}


write_config = RunConfigs(
    target={
        "welcome": {"match": WELCOME, "timeout": "2s"},
        "echo": {"payload": '{"type":"ping","seq":{seq}}', "match": '"seq":{seq}'},
    },
    scenario={"baseline": {"probes": 3, "interval": "50ms"}, "recovery": FAST_RECOVERY},
)


async def run(config: SpikewatchConfig, prober: Prober | None = None) -> RunReport:
    prober = prober or make_prober()
    report = await execute_run(config.targets[0], config.scenarios[0], prober)
    assert prober.registry.open == 0, "a run leaves no connection open"
    return report


async def test_avalanche_against_healthy_target_passes(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """A healthy target passes: every spike connection ok, recovered at once."""
    config = write_config(
        tmp_path,
        reference.url,
        {
            "spike": {"connections": 30, "batches": 3, "batch_interval": "100ms"},
            "thresholds": {"success_ratio": 1.0, "handshake_p95": "2s"},
        },
    )
    report = await run(config)
    r = report.result
    assert r.result == RunResultKind.PASSED, r.message
    assert r.baseline.ok == 3
    assert r.baseline.latency is not None
    assert r.spike is not None
    assert r.spike.attempted == 30
    assert r.spike.outcomes == {"ok": 30}
    assert r.spike.handshake is not None
    assert r.spike.first_message is not None
    assert r.spike.message_rtt is not None
    assert r.spike.start_lateness is not None
    assert r.recovery is not None
    assert r.recovery.recovered
    assert r.recovery.seconds is not None
    assert r.recovery.seconds < 1.0
    assert [c.name for c in r.thresholds] == [
        "success_ratio",
        "handshake_p95",
        "recovered",
    ]
    assert all(c.passed for c in r.thresholds)
    assert r.errors == ()
    assert len(report.attempts) == 3 + 30 + r.recovery.probes
    timeline = r.timeline
    assert timeline["baseline_start"] <= timeline["spike_start"] <= timeline["t0"]
    # Batches start 100 ms apart: lateness is measured against that plan.
    planned = sorted(
        {a.planned for a in report.attempts if a.planned is not None and a.phase.value == "spike"}
    )
    assert planned[1] - planned[0] == pytest.approx(0.1, abs=1e-6)
    doc = r.as_dict()
    assert doc["result"] == "passed"
    assert doc["spike"]["attempted"] == 30
    await asyncio.wait_for(reference.wait_for_stats(lambda s: s.open == 0), scaled(5))


async def test_ramp_opens_each_step_at_its_time(tmp_path: Path, reference: RunningTarget) -> None:
    """A ramp opens step k at k times step_interval with the step's count."""
    config = write_config(
        tmp_path, reference.url, {"ramp": {"steps": [2, 3, 4], "step_interval": "150ms"}}
    )
    report = await run(config)
    spike = [a for a in report.attempts if a.phase.value == "spike"]
    assert len(spike) == 9
    starts = sorted({a.planned for a in spike if a.planned is not None})
    assert [round(b - starts[0], 6) for b in starts] == [0.0, 0.15, 0.3]
    assert report.result.result == RunResultKind.PASSED


async def test_target_down_fires_no_spike(tmp_path: Path) -> None:
    """With the baseline failing, the run is target_down and no spike is fired."""
    config = write_config(
        tmp_path,
        f"ws://127.0.0.1:{hostile.unused_port()}/ws",
        {"spike": {"connections": 50}},
    )
    r = (await run(config)).result
    assert r.result == RunResultKind.TARGET_DOWN
    assert r.spike is None
    assert r.recovery is None
    assert r.baseline.outcomes == {"refused": 3}
    assert [(e.outcome, e.count) for e in r.errors] == [(Outcome.REFUSED, 3)]


async def test_unresolvable_host_is_target_down_with_dns_error(tmp_path: Path) -> None:
    """A target whose name does not resolve is target_down with dns_error outcomes."""
    config = write_config(
        tmp_path, "ws://no-such-host.invalid:80/ws", {"spike": {"connections": 5}}
    )
    r = (await run(config)).result
    assert r.result == RunResultKind.TARGET_DOWN
    assert r.baseline.outcomes == {"dns_error": 3}


async def test_stable_connections_dropped_during_burst_are_counted(tmp_path: Path) -> None:
    """A server that drops open connections when a burst arrives: every loss counted."""
    behaviour = TargetBehaviour(drop_on_burst=True, burst_threshold=15, burst_window=1.0)
    async with await start_reference_target(behaviour) as target:
        config = write_config(
            tmp_path,
            target.url,
            {
                "spike": {"connections": 20},
                "stable": {"connections": 4, "ping_interval": "100ms", "timeout": "1s"},
                "thresholds": {"dropped_stable": 0},
            },
        )
        r = (await run(config)).result
    assert r.stable is not None
    assert r.stable.opened == 4
    assert r.stable.dropped == 4
    assert r.stable.drop_example is not None
    assert "1012" in r.stable.drop_example
    assert r.result == RunResultKind.FAILED
    failed = [c for c in r.thresholds if not c.passed]
    assert [c.name for c in failed] == ["dropped_stable"]


async def test_stable_connections_survive_a_healthy_spike(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """Stable connections exchange echoes through the run and none is lost."""
    config = write_config(
        tmp_path,
        reference.url,
        {
            "spike": {"connections": 10},
            "hold": "300ms",
            "stable": {"connections": 3, "ping_interval": "50ms"},
        },
    )
    report = await run(config)
    r = report.result
    assert r.stable is not None
    assert r.stable.dropped == 0
    assert r.stable.opened == 3
    assert r.stable.message_rtt is not None
    assert r.stable.message_rtt.count >= 3
    assert len(report.stable_rtts) == r.stable.message_rtt.count


async def test_recovery_time_matches_the_targets_slow_period(tmp_path: Path) -> None:
    """A target slow for a known time after a burst: recovery within one probe interval of it."""
    behaviour = TargetBehaviour(
        burst_threshold=20, burst_window=0.5, recovery_delay=1.5, slow_delay=0.15
    )
    async with await start_reference_target(behaviour) as target:
        config = write_config(
            tmp_path,
            target.url,
            {
                "spike": {"connections": 40},
                "recovery": {**FAST_RECOVERY, "tolerance": 0.5, "slack": "30ms"},
            },
        )
        r = (await run(config)).result
        stats = target.stats()
    assert r.recovery is not None
    assert r.recovery.recovered, r.message
    assert r.recovery.seconds is not None
    assert stats.degraded_until_epoch is not None
    t0_wall = r.started_at + r.timeline["t0"]
    truth = stats.degraded_until_epoch - t0_wall
    assert truth > 1.0
    # The first good probe starts in the probe slot after the slow period ends.
    assert truth - 0.02 <= r.recovery.seconds <= truth + 0.1 + scaled(0.05)


async def test_never_recovering_target_fails(tmp_path: Path) -> None:
    """A target that stays slow past the timeout did not recover, and the run fails."""
    behaviour = TargetBehaviour(
        burst_threshold=10, burst_window=0.5, recovery_delay=30, slow_delay=0.1
    )
    async with await start_reference_target(behaviour) as target:
        config = write_config(
            tmp_path,
            target.url,
            {
                "spike": {"connections": 15},
                "recovery": {**FAST_RECOVERY, "timeout": "1s", "slack": "5ms", "tolerance": 0.2},
            },
        )
        r = (await run(config)).result
    assert r.recovery is not None
    assert not r.recovery.recovered
    assert r.result == RunResultKind.FAILED
    assert "recovered" in r.message


async def test_abort_rule_stops_the_spike(tmp_path: Path) -> None:
    """Past abort.error_ratio the remaining batches are not attempted ('aborted')."""
    async with await start_reference_target(TargetBehaviour(capacity=5)) as target:
        config = write_config(
            tmp_path,
            target.url,
            {
                "spike": {"connections": 50, "batches": 5, "batch_interval": "200ms"},
                "abort": {"error_ratio": 0.4, "min_attempts": 10},
            },
        )
        r = (await run(config)).result
    assert r.result == RunResultKind.ABORTED
    assert r.spike is not None
    assert r.spike.aborted
    assert r.spike.outcomes == {"ok": 5, "http_status": 5, "aborted": 40}
    # Recovery probes racing the spike's closing connections may meet 503 too.
    assert r.upgrade_statuses["503"] >= 5
    assert set(r.upgrade_statuses) == {"503"}


async def test_connection_limit_is_respected(tmp_path: Path, reference: RunningTarget) -> None:
    """The shared connection limit caps the spike; the excess is 'aborted', not queued."""
    config = write_config(tmp_path, reference.url, {"spike": {"connections": 12}, "hold": "200ms"})
    prober = make_prober(limit=8)
    r = (await run(config, prober)).result
    assert r.spike is not None
    assert r.spike.outcomes["ok"] <= 8
    assert r.spike.outcomes["ok"] + r.spike.outcomes["aborted"] == 12
    assert prober.registry.peak <= 8


async def test_saturated_prober_makes_the_run_invalid(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """Past the prober's own limits the run is invalid, never the target's failure."""
    config = write_config(tmp_path, reference.url, {"spike": {"connections": 20}})
    r = (await run(config, make_prober(lateness=1e-9))).result
    assert r.result == RunResultKind.INVALID
    assert r.prober.saturated
    assert "start lateness" in r.message


async def test_missed_threshold_fails_with_its_name(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """A threshold that does not hold fails the run and names itself."""
    config = write_config(
        tmp_path,
        reference.url,
        {"spike": {"connections": 5}, "thresholds": {"handshake_p95": 0.000001}},
    )
    r = (await run(config)).result
    assert r.result == RunResultKind.FAILED
    assert "handshake_p95" in r.message


async def test_run_deadline_ends_a_stuck_run(tmp_path: Path) -> None:
    """A run that would outlast its timeout ends as 'error' at the deadline, sockets closed."""
    async with hostile.silent_server() as server:
        config = write_config(
            tmp_path,
            server.url,
            {"spike": {"connections": 3}, "timeout": "500ms"},
            handshake_timeout="10s",
        )
        start = time.monotonic()
        r = (await run(config)).result
        elapsed = time.monotonic() - start
    assert r.result == RunResultKind.ERROR
    assert "deadline of 0.5s" in r.message
    assert elapsed < 0.5 + scaled(2)


async def test_wss_target_with_and_without_the_ca_file(tmp_path: Path) -> None:
    """A wss target passes with tls.ca_file naming the test CA, and is tls_error without."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with await start_reference_target(TargetBehaviour(), ssl_context=server_context) as t:
        url = f"wss://localhost:{t.port}/ws"
        trusted = write_config(
            tmp_path, url, {"spike": {"connections": 5}}, tls={"ca_file": str(ca_file)}
        )
        r = (await run(trusted)).result
        assert r.result == RunResultKind.PASSED, r.message
        untrusted = write_config(tmp_path, url, {"spike": {"connections": 5}})
        r = (await run(untrusted)).result
    assert r.result == RunResultKind.TARGET_DOWN
    assert r.baseline.outcomes == {"tls_error": 3}
    assert "certificate verification failed" in r.errors[0].example


async def test_stable_connection_closed_with_the_upgrade_is_counted_dropped(tmp_path: Path) -> None:
    """A peer that closes in the same read as its 101 loses stable connections: counted."""
    async with hostile.close_after_upgrade_server("frame") as server:
        config = write_config(
            tmp_path,
            server.url,
            {"spike": {"connections": 2}, "stable": {"connections": 3, "ping_interval": "100ms"}},
            welcome=None,
            echo=None,
        )
        r = (await run(config)).result
    assert r.stable is not None
    assert r.stable.opened == 3
    assert r.stable.dropped == 3


async def test_recovery_time_is_a_whole_number_of_probe_slots(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """Recovery is measured from T0 to a probe's slot, so it is k times probe_interval exactly."""
    config = write_config(tmp_path, reference.url, {"spike": {"connections": 10}})
    r = (await run(config)).result
    assert r.recovery is not None
    assert r.recovery.seconds is not None
    slots = r.recovery.seconds / 0.1
    assert slots == pytest.approx(round(slots), abs=1e-6)


async def test_a_spike_at_the_limit_leaves_room_for_its_probes(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """With the spike held at the connection limit, baseline and recovery probes still run."""
    config = write_config(tmp_path, reference.url, {"spike": {"connections": 10}, "hold": "400ms"})
    prober = make_prober(limit=10 + PROBE_RESERVE)
    r = (await run(config, prober)).result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 10}
    assert r.recovery is not None
    assert "aborted" not in r.recovery.outcomes
    assert r.recovery.recovered


async def test_a_timer_firing_early_never_starts_a_probe_past_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timer firing early (uvloop: up to 1 ms; here 5 ms) never starts a probe on the deadline.

    With the timeout a whole number of probe intervals, the last slot falls exactly on the
    deadline; judged by the early wake-up time it was started, and the tracker refused it.
    """
    real_sleep_until = probes.sleep_until

    async def early(when: float) -> None:
        await real_sleep_until(when - 0.005)

    monkeypatch.setattr(probes, "sleep_until", early)
    behaviour = TargetBehaviour(
        burst_threshold=10, burst_window=0.5, recovery_delay=30, slow_delay=0.1
    )
    async with await start_reference_target(behaviour) as target:
        config = write_config(
            tmp_path,
            target.url,
            {
                "spike": {"connections": 15},
                "recovery": {
                    "probe_interval": "50ms",
                    "consecutive": 3,
                    "timeout": "500ms",
                    "slack": "5ms",
                    "tolerance": 0.2,
                },
            },
        )
        r = (await run(config)).result
    assert r.result == RunResultKind.FAILED, r.message
    assert r.recovery is not None
    assert not r.recovery.recovered


@pytest.mark.parametrize(
    "failure",
    [
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        # glibc's EAI_SYSTEM comes out as a plain OSError with whatever errno was left.
        OSError(16, "Device or resource busy"),
    ],
    ids=["gaierror", "eai_system"],
)
async def test_a_resolver_failing_for_want_of_descriptors_is_not_a_dns_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: OSError
) -> None:
    """At EMFILE the resolver fails too; the run is invalid, not the target's dns_error."""

    async def no_lookup(host: str, port: int) -> str:
        raise failure

    monkeypatch.setattr(runner, "resolve", no_lookup)
    config = write_config(tmp_path, "ws://localhost:9/", {"spike": {"connections": 1}})
    prober = make_prober()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The limit at the lowest free descriptor: no socket can be made.
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        r = (await run(config, prober)).result
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert r.result == RunResultKind.INVALID, r.message
    assert {a["outcome"] for a in r.as_dict()["errors"]} == {"error"}
    assert any("found no file descriptor" in reason for reason in r.prober.reasons)


async def test_a_resolver_failing_otherwise_is_an_error_with_its_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver OSError that is not a name error, with descriptors to spare: error, named."""

    async def broken(host: str, port: int) -> str:
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(runner, "resolve", broken)
    config = write_config(tmp_path, "ws://localhost:9/", {"spike": {"connections": 1}})
    r = (await run(config)).result
    assert r.result == RunResultKind.TARGET_DOWN, r.message
    (group,) = r.as_dict()["errors"]
    assert group["outcome"] == "error"
    assert (
        "cannot resolve localhost: OSError: [Errno 16] Device or resource busy" in group["example"]
    )


async def test_a_baseline_measured_while_the_loop_stalled_is_invalid(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """Stalls of the prober's own loop during the baseline make the run invalid, naming
    the baseline: B measured then describes the prober, not the target (issue 12)."""
    config = write_config(
        tmp_path,
        reference.url,
        {"baseline": {"probes": 5, "interval": "200ms"}, "spike": {"connections": 3}},
    )
    loop = asyncio.get_running_loop()
    stalls = [loop.call_later(0.05 + 0.1 * i, time.sleep, 0.15) for i in range(8)]
    try:
        r = (await run(config, make_prober(lag=0.1))).result
    finally:
        for handle in stalls:
            handle.cancel()
    assert r.result == RunResultKind.INVALID, r.message
    assert any(reason.startswith("baseline: event-loop lag p99") for reason in r.prober.reasons)


async def test_held_spike_connections_the_target_drops_are_counted(tmp_path: Path) -> None:
    """Held spike connections closed by the target during hold are reported with why, and
    a dropped_held threshold fails the run."""
    async with hostile_extra.idle_timeout_server(after=0.3) as server:
        config = write_config(
            tmp_path,
            server.url,
            {"spike": {"connections": 6}, "hold": "1s", "thresholds": {"dropped_held": 0}},
        )
        r = (await run(config)).result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 6}
    assert r.spike.held_dropped == 6
    assert r.spike.held_drop_example == "the peer closed with code 1001 (idle timeout)"
    assert r.result == RunResultKind.FAILED
    assert "dropped_held" in r.message


async def test_held_spike_connections_the_receive_budget_closes_are_the_probers_loss(
    tmp_path: Path,
) -> None:
    """Held spike connections closed by the prober's own receive budget are
    held_lost_to_prober, not held_dropped: the run is invalid, not failed on dropped_held."""
    async with hostile_extra.budget_buster_server(after=0.3) as server:
        config = write_config(
            tmp_path,
            server.url,
            {"spike": {"connections": 4}, "hold": "1s", "thresholds": {"dropped_held": 0}},
        )
        prober = make_prober(receive_budget_bytes=32_768)
        r = (await run(config, prober)).result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 4}
    assert (r.spike.held_dropped, r.spike.held_lost_to_prober) == (0, 4)
    assert r.spike.held_drop_example is None
    assert r.spike.as_dict()["held_lost_to_prober"] == 4
    assert r.result == RunResultKind.INVALID, r.message
    assert r.prober.reasons == (
        "4 held spike connection(s) lost to the prober's receive buffers "
        "(limits.max_receive_buffer_bytes): its own limit, not dropped by the target",
    )
    assert [c.name for c in r.thresholds if not c.passed] == []
    assert prober.registry.receive_budget.held == 0


async def test_keepalives_unanswered_when_the_run_ends_are_reported(tmp_path: Path) -> None:
    """Stable pings that no pong answered by the run's end are neither a drop nor silence:
    stable.unanswered_at_end counts them (issue 13)."""
    async with hostile_extra.pong_less_server() as server:
        config = write_config(
            tmp_path,
            server.url,
            {
                "spike": {"connections": 2},
                "stable": {"connections": 3, "ping_interval": "50ms", "timeout": "60s"},
            },
            echo=None,
        )
        r = (await run(config)).result
    assert r.stable is not None
    assert (r.stable.opened, r.stable.dropped, r.stable.unanswered) == (3, 0, 3)
    assert r.stable.message_rtt is None
    assert r.as_dict()["stable"]["unanswered_at_end"] == 3


async def test_conn_in_the_url_and_headers_and_a_configured_host_reach_the_server(
    tmp_path: Path,
) -> None:
    """{conn} in the url's path and in header values is filled per connection (a SockJS
    session id), and a configured Host header replaces the url's (issue 13)."""
    async with hostile.welcome_server('{"type":"welcome"}') as server:
        url = server.url.replace("/ws", "/echo/000/s{conn}/websocket")
        config = write_config(
            tmp_path,
            url,
            {"spike": {"connections": 3}},
            echo=None,
            headers={"X-Session": "sess-{conn}", "Host": "chat.internal"},
        )
        r = (await run(config)).result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 3}
    heads = server.requests
    targets = {h.target for h in heads}
    assert len(targets) == len(heads), "every connection had its own session path"
    for head in heads:
        number = head.target.removeprefix("/echo/000/s").removesuffix("/websocket")
        assert number.isdigit(), head.target
        assert head.header("x-session") == f"sess-{number}"
        assert head.header("host") == "chat.internal"
