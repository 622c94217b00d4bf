"""The config model's rules, checked through parse_config for readable problem paths."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from spikewatch.config import (
    JwtConfig,
    ScheduleConfig,
    SpikewatchConfig,
    parse_config,
)
from spikewatch.core.saturation import ProberLimits
from spikewatch.core.verdict import ThresholdLimits
from spikewatch.errors import AuthError, ConfigError

PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"


def target(**fields: Any) -> dict[str, Any]:
    return {"name": "chat", "url": "ws://chat.test/ws", **fields}


def scenario(**fields: Any) -> dict[str, Any]:
    return {"name": "burst", "spike": {"connections": 5}, **fields}


def config(**sections: Any) -> dict[str, Any]:
    return {"targets": [target()], "scenarios": [scenario()], **sections}


def build(data: dict[str, Any]) -> SpikewatchConfig:
    return parse_config(data)


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return [str(problem) for problem in caught.value.problems]


def jwt(**fields: Any) -> dict[str, Any]:
    return {"auth": {"jwt": fields}}


# --- defaults and shape ----------------------------------------------------------------


def test_minimal_config_gets_the_documented_defaults() -> None:
    """A config with one target and one scenario fills every other value with its default."""
    cfg = build(config())
    assert cfg.server.listen == "0.0.0.0:9878"
    assert cfg.server.api_token is None
    assert (cfg.limits.max_connections, cfg.limits.max_concurrent_runs) == (2000, 1)
    assert cfg.prober.max_loop_lag_p99 == pytest.approx(0.1)
    assert cfg.prober.max_start_lateness_p99 == pytest.approx(0.25)
    assert cfg.prober.max_cpu_percent == 95.0
    assert cfg.prober.lag_sample_interval == pytest.approx(0.02)
    assert cfg.prober.idle_lag_sample_interval == pytest.approx(0.25)
    assert (cfg.log.format, cfg.log.level) == ("text", "info")
    t = cfg.targets[0]
    assert (t.headers, t.subprotocols, t.welcome, t.echo, t.auth) == ({}, (), None, None, None)
    assert (t.handshake_timeout, t.close_timeout, t.max_message_bytes) == (5.0, 1.0, 1048576)
    assert not t.tls.insecure_skip_verify
    s = cfg.scenarios[0]
    assert s.targets is None
    assert (s.schedule.every, s.schedule.cron, s.schedule.jitter) == (900.0, None, 0.0)
    assert s.schedule.timezone == "UTC"
    assert (s.hold, s.stable, s.timeout) == (0.0, None, None)
    assert (s.baseline.probes, s.baseline.interval) == (5, 0.5)
    r = s.recovery
    assert (r.probe_interval, r.consecutive, r.tolerance, r.timeout) == (0.5, 3, 0.2, 120.0)
    assert r.slack == pytest.approx(0.005)
    assert s.thresholds.model_dump() == dict.fromkeys(s.thresholds.model_dump())
    assert (s.abort.error_ratio, s.abort.min_attempts) == (None, 10)


def test_config_is_frozen() -> None:
    """A loaded config cannot be changed in place."""
    cfg = build(config())
    with pytest.raises(ValidationError, match="frozen"):
        cfg.limits.max_connections = 5  # type: ignore[misc]


def test_unknown_and_missing_fields_are_named() -> None:
    """An unknown key is 'unknown field'; a missing required one is 'required'."""
    data = config(limits={"max_conections": 5})
    data["targets"] = [{"name": "chat"}]
    assert problems(data) == ["limits.max_conections: unknown field", "targets[0].url: required"]


def test_targets_and_scenarios_must_not_be_empty() -> None:
    """At least one target and one scenario are required."""
    assert problems({"targets": [], "scenarios": []}) == [
        "targets: must have at least 1 item(s)",
        "scenarios: must have at least 1 item(s)",
    ]
    assert problems({}) == ["targets: required", "scenarios: required"]


def test_sections_of_the_wrong_kind_are_named() -> None:
    """A section that is not a mapping, or a list that is not a list, says what it must be."""
    data = config(server=5, limits=[])
    data["targets"] = {"name": "chat"}
    assert problems(data) == [
        "server: must be a mapping",
        "limits: must be a mapping",
        "targets: must be a list",
    ]


# --- server, limits, prober, log -------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:9878", "127.0.0.1", 9878),
        ("localhost:0", "localhost", 0),
        ("[::1]:65535", "::1", 65535),
        ("[::]:80", "::", 80),
    ],
)
def test_listen_splits_into_host_and_port(listen: str, host: str, port: int) -> None:
    """listen is host:port, IPv6 in brackets, port 0 to 65535."""
    server = build(config(server={"listen": listen})).server
    assert (server.host, server.port) == (host, port)


@pytest.mark.parametrize(
    "listen",
    [
        "nope",
        ":9878",
        "host:",
        "a b:80",
        "1.2.3.4:65536",
        "::1:80",
        "[zz]:80",
        "[::1:80",
        "h:+80",
        "h:\u0663",
    ],
)
def test_listen_rejects_anything_but_host_port(listen: str) -> None:
    """A listen address that is not host:port is a problem at server.listen."""
    [problem] = problems(config(server={"listen": listen}))
    assert problem.startswith("server.listen: must be host:port")


def test_api_token_and_its_file_are_exclusive() -> None:
    """Setting both api_token and api_token_file is a problem; so is an empty token."""
    both = {"api_token": "t0ken", "api_token_file": "/run/secrets/token"}
    assert problems(config(server=both)) == [
        "server.api_token: set api_token or api_token_file, not both"
    ]
    assert problems(config(server={"api_token": " "})) == ["server.api_token: must not be empty"]
    assert build(config(server={"api_token": "t0ken"})).server.api_token is not None


def test_limits_must_be_at_least_one() -> None:
    """max_connections and max_concurrent_runs are at least 1."""
    limits = {"max_connections": 0, "max_concurrent_runs": -1}
    assert problems(config(limits=limits)) == [
        "limits.max_connections: must be ≥ 1",
        "limits.max_concurrent_runs: must be ≥ 1",
    ]


def test_prober_limits_parse_durations_and_must_be_positive() -> None:
    """Prober limits take durations, and each must be more than 0."""
    prober = build(config(prober={"max_loop_lag_p99": "50ms", "max_cpu_percent": 150})).prober
    assert prober.max_loop_lag_p99 == pytest.approx(0.05)
    assert prober.max_cpu_percent == 150
    bad = {"max_cpu_percent": 0, "lag_sample_interval": "0s"}
    assert problems(config(prober=bad)) == [
        "prober.max_cpu_percent: must be > 0",
        "prober.lag_sample_interval: must be > 0",
    ]


def test_idle_lag_sample_interval_is_at_least_the_interval() -> None:
    """Sampling between runs may be as often as during them, never more often."""
    same = {"lag_sample_interval": "50ms", "idle_lag_sample_interval": "50ms"}
    assert build(config(prober=same)).prober.idle_lag_sample_interval == pytest.approx(0.05)
    faster = {"lag_sample_interval": "50ms", "idle_lag_sample_interval": "20ms"}
    assert problems(config(prober=faster)) == [
        "prober.idle_lag_sample_interval: must be ≥ lag_sample_interval (0.05s)"
    ]
    assert problems(config(prober={"idle_lag_sample_interval": "0s"})) == [
        "prober.idle_lag_sample_interval: must be > 0"
    ]


def test_log_choices_ignore_case_and_reject_others() -> None:
    """log.level and log.format accept their choices in any case, and nothing else."""
    assert build(config(log={"level": "DEBUG", "format": "JSON"})).log.level == "debug"
    assert problems(config(log={"level": "loud", "format": 1})) == [
        "log.format: must be 'text' or 'json'",
        "log.level: must be 'debug', 'info', 'warning' or 'error'",
    ]


# --- targets ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Chat", "chat staging", "chat.v1", "", "é"])
def test_target_name_is_a_label_value(name: str) -> None:
    """Target names use only a-z, 0-9, _ and -."""
    assert problems(config(targets=[target(name=name)])) == [
        "targets[0].name: must use only a-z, 0-9, _ and - (it becomes a metric label)"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://chat.test/ws", "must start with ws:// or wss://"),
        ("chat.test/ws", "must start with ws:// or wss://"),
        ("ws:///ws", "must name a host"),
        ("ws://chat.test:99999/", "is not a valid URL"),
        ("ws://[::1/", "is not a valid URL"),
        ("ws://chat.test:0/", "must have a port from 1 to 65535"),
        ("ws://user:pw@chat.test/", "must not carry user:password@"),
        ("ws://chat.test/ws#top", "must not have a #fragment"),
        ("ws://chat.test/a b", "must be ASCII without spaces"),
        ("ws://chat.test/\tb", "must be ASCII without spaces"),
        ("ws://chät.test/", "must be ASCII without spaces"),
    ],
)
def test_target_url_must_be_a_websocket_url(url: str, message: str) -> None:
    """url must be ws:// or wss:// with a host, per RFC 6455 §3."""
    [problem] = problems(config(targets=[target(url=url)]))
    assert problem.startswith(f"targets[0].url: {message}")


def test_target_url_problem_never_repeats_the_url() -> None:
    """A token in the URL's query never appears in the problem."""
    [problem] = problems(config(targets=[target(url="http://chat.test/?token=s3cr3t-query")]))
    assert "s3cr3t-query" not in problem


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("ws://chat.test", (False, "chat.test", 80, "/", "chat.test")),
        ("ws://chat.test:80/ws", (False, "chat.test", 80, "/ws", "chat.test")),
        ("WSS://Chat.Test/ws?room=1&x=2", (True, "chat.test", 443, "/ws?room=1&x=2", "chat.test")),
        ("wss://chat.test:8443/?", (True, "chat.test", 8443, "/", "chat.test:8443")),
        ("ws://[::1]:9000/a", (False, "::1", 9000, "/a", "[::1]:9000")),
        ("ws://127.0.0.1/?q", (False, "127.0.0.1", 80, "/?q", "127.0.0.1")),
    ],
)
def test_target_url_parts(url: str, parts: tuple[bool, str, int, str, str]) -> None:
    """A target exposes the URL's scheme, host, port (defaulted), resource and Host header."""
    t = build(config(targets=[target(url=url)])).targets[0]
    assert (t.secure, t.host, t.port, t.resource, t.host_header) == parts
    assert t.url == url


def test_headers_must_be_valid_http_fields() -> None:
    """Header names are tokens; values have no CR or LF; handshake headers are refused."""
    headers = {
        "Bad Name": "v",
        "X-Split": "a\r\nInjected: yes",
        "Host": "other.test",
        "Sec-WebSocket-Protocol": "chat",
        "Upgrade": "websocket",
        "X-A": "1",
        "x-a": "2",
        "": "v",
    }
    assert problems(config(targets=[target(headers=headers)])) == [
        'targets[0].headers["Bad Name"]: is not a valid header name',
        "targets[0].headers.X-Split: value must be printable ASCII, without CR or LF",
        "targets[0].headers.Sec-WebSocket-Protocol: is derived from subprotocols",
        "targets[0].headers.Upgrade: is set by the WebSocket handshake",
        "targets[0].headers.x-a: repeats X-A (names ignore case)",
        'targets[0].headers[""]: is not a valid header name',
    ]


def test_a_configured_host_header_replaces_the_urls() -> None:
    """Host may be set (a virtual host behind a proxy); the url still says where to connect."""
    cfg = build(config(targets=[target(headers={"host": "chat.internal:8443"})]))
    assert cfg.targets[0].host_header == "chat.internal:8443"
    assert (cfg.targets[0].host, cfg.targets[0].port) == ("chat.test", 80)


def test_conn_may_stand_in_the_path_and_query_only() -> None:
    """{conn} in the url's host is refused at the field; in its path it is accepted."""
    [problem] = problems(config(targets=[target(url="ws://h{conn}.test/ws")]))
    assert problem.startswith("targets[0].url: may hold {conn} in its path and query only")
    cfg = build(config(targets=[target(url="ws://127.0.0.1:9/echo/0/{conn}/websocket")]))
    assert cfg.targets[0].resource == "/echo/0/{conn}/websocket"


def test_header_problems_never_show_the_value() -> None:
    """A bad header value is named by its header only: it may be a credential."""
    [problem] = problems(config(targets=[target(headers={"X-Key": "s3cr3t\nv"})]))
    assert "s3cr3t" not in problem


def test_headers_must_be_strings() -> None:
    """A header key or value that is not a string is named."""
    assert problems(config(targets=[target(headers={1: "a", "X-N": 5})])) == [
        "targets[0].headers[1] (key): must be a string",
        "targets[0].headers.X-N: must be a string",
    ]


def test_subprotocols_are_unique_tokens() -> None:
    """Subprotocols are tokens (RFC 6455 §4.1) and are not repeated."""
    t = build(config(targets=[target(subprotocols=["chat.v1", "chat.v2"])])).targets[0]
    assert t.subprotocols == ("chat.v1", "chat.v2")
    bad = ["chat v1", "chat.v2", "chat.v2"]
    assert problems(config(targets=[target(subprotocols=bad)])) == [
        "targets[0].subprotocols[0]: is not a valid subprotocol name",
        "targets[0].subprotocols[2]: repeats 'chat.v2'",
    ]


def test_max_message_bytes_has_a_floor() -> None:
    """max_message_bytes is at least 125, the largest control frame payload (RFC 6455 §5.5)."""
    assert problems(config(targets=[target(max_message_bytes=124)])) == [
        "targets[0].max_message_bytes: must be ≥ 125"
    ]


def test_target_timeouts_must_be_positive() -> None:
    """handshake_timeout and close_timeout take durations and must be more than 0."""
    t = build(config(targets=[target(handshake_timeout="2s", close_timeout=0.5)])).targets[0]
    assert (t.handshake_timeout, t.close_timeout) == (2.0, 0.5)
    assert problems(config(targets=[target(handshake_timeout=0)])) == [
        "targets[0].handshake_timeout: must be > 0"
    ]


def test_welcome_match_must_compile() -> None:
    """welcome.match is a regex; a broken one is a problem naming the field."""
    welcome = {"match": '"type":\\s*"welcome"', "timeout": "1s"}
    t = build(config(targets=[target(welcome=welcome)])).targets[0]
    assert t.welcome is not None
    assert t.welcome.pattern.search('{"type": "welcome"}')
    assert t.welcome.timeout == 1.0
    [problem] = problems(config(targets=[target(welcome={"match": "("})]))
    assert problem.startswith("targets[0].welcome.match: is not a valid regular expression")


def test_echo_payload_keeps_json_braces_and_fills_placeholders() -> None:
    """echo.payload is filled by plain replacement, so JSON braces need no escaping."""
    echo = {"payload": '{"type":"ping","seq":{seq},"c":"{conn}"}', "match": '"seq":\\s*{seq}\\b'}
    t = build(config(targets=[target(echo=echo)])).targets[0]
    assert t.echo is not None
    assert t.echo.timeout == 2.0
    assert t.echo.payload_for(7, 3) == '{"type":"ping","seq":7,"c":"3"}'
    assert t.echo.pattern_for(7, 3).search('{"seq": 7}')
    assert not t.echo.pattern_for(7, 3).search('{"seq": 70}')


def test_echo_match_must_compile_with_placeholders_filled() -> None:
    """echo.match is checked with {seq} and {conn} replaced; a broken regex is a problem."""
    ok = {"payload": "p", "match": "x{seq}{2}"}
    assert build(config(targets=[target(echo=ok)])).targets[0].echo is not None
    bad = {"payload": "", "match": "[{seq}"}
    found = problems(config(targets=[target(echo=bad)]))
    assert found[0] == "targets[0].echo.payload: must not be empty"
    assert found[1].startswith("targets[0].echo.match: is not a valid regular expression")


def test_tls_applies_only_to_wss_targets() -> None:
    """TLS settings on a ws:// target are a problem; defaults are fine."""
    assert build(config(targets=[target(tls={})])).targets[0].tls.files == {}
    tls = {"insecure_skip_verify": True}
    assert problems(config(targets=[target(tls=tls)])) == [
        "targets[0].tls: applies only to wss:// urls"
    ]


def test_tls_server_name_is_a_host_name() -> None:
    """tls.server_name must look like a host name."""
    t = target(url="wss://chat.test/", tls={"server_name": "a b"})
    assert problems(config(targets=[t])) == [
        "targets[0].tls.server_name: must be a host name, like staging.example.com",
    ]
    t = target(url="wss://10.0.0.1/", tls={"server_name": "chat.test"})
    assert build(config(targets=[t])).targets[0].tls.server_name == "chat.test"


def test_tls_key_file_needs_cert_file() -> None:
    """tls.key_file without tls.cert_file is a problem."""
    t = target(url="wss://chat.test/", tls={"key_file": "/k.pem"})
    assert problems(config(targets=[t])) == ["targets[0].tls.key_file: needs cert_file"]


# --- JWT -------------------------------------------------------------------------------


def test_hs_algorithms_need_exactly_one_secret() -> None:
    """HS* needs secret or secret_file, not both, and no private key."""
    assert problems(config(targets=[target(**jwt())])) == [
        "targets[0].auth.jwt: HS256 needs secret or secret_file"
    ]
    both = jwt(secret="s3cr3t", secret_file="/s", private_key=PEM)
    assert problems(config(targets=[target(**both)])) == [
        "targets[0].auth.jwt.secret: set secret or secret_file, not both",
        "targets[0].auth.jwt.private_key: is for RS*, PS*, ES* and EdDSA;"
        " HS256 signs with secret or secret_file",
    ]
    assert problems(config(targets=[target(**jwt(secret=""))])) == [
        "targets[0].auth.jwt.secret: must not be empty"
    ]


@pytest.mark.parametrize("algorithm", ["RS256", "PS384", "ES512", "EdDSA"])
def test_key_algorithms_need_exactly_one_private_key(algorithm: str) -> None:
    """RS*, PS*, ES* and EdDSA need private_key or private_key_file, and no secret."""
    assert problems(config(targets=[target(**jwt(algorithm=algorithm))])) == [
        f"targets[0].auth.jwt: {algorithm} needs private_key or private_key_file"
    ]
    wrong = jwt(algorithm=algorithm, private_key=PEM, private_key_file="/k", secret_file="/s")
    assert problems(config(targets=[target(**wrong)])) == [
        "targets[0].auth.jwt.private_key: set private_key or private_key_file, not both",
        f"targets[0].auth.jwt.secret_file: is for HS*; {algorithm} signs with private_key"
        " or private_key_file",
    ]


def test_inline_private_key_must_look_like_pem() -> None:
    """An inline private key that is not PEM is a problem, and is not shown."""
    found = problems(config(targets=[target(**jwt(algorithm="RS256", private_key="k3y-text"))]))
    assert found == ["targets[0].auth.jwt.private_key: is not a PEM private key"]


def test_jwt_algorithm_is_a_known_choice() -> None:
    """An unknown JWT algorithm is a problem that lists the choices."""
    [problem] = problems(config(targets=[target(**jwt(algorithm="none", secret="s"))]))
    assert problem.startswith("targets[0].auth.jwt.algorithm: must be 'HS256', 'HS384'")


def test_key_material_is_the_secret_or_the_pem() -> None:
    """key_material() returns the inline secret for HS*, the PEM for the others."""
    cfg = build(config(targets=[target(**jwt(secret="s3cr3t", ttl="1m"))]))
    auth = cfg.targets[0].auth
    assert auth is not None
    assert auth.jwt.key_material() == "s3cr3t"
    assert auth.jwt.ttl == 60.0
    cfg = build(config(targets=[target(**jwt(algorithm="ES256", private_key=PEM))]))
    assert cfg.targets[0].auth is not None
    assert cfg.targets[0].auth.jwt.key_material() == PEM


def test_key_material_of_an_unread_file_is_an_auth_error() -> None:
    """A JwtConfig built without the loader has not read its key file: AuthError."""
    with pytest.raises(AuthError, match="secret_file was not read"):
        JwtConfig(secret_file=Path("/s")).key_material()
    with pytest.raises(AuthError, match="private_key_file was not read"):
        JwtConfig(algorithm="RS256", private_key_file=Path("/k")).key_material()


@pytest.mark.parametrize(
    ("send_as", "kind", "param"),
    [
        ("header", "header", None),
        ("subprotocol", "subprotocol", None),
        ("query:access_token", "query", "access_token"),
        ("query:a.b~c-d", "query", "a.b~c-d"),
    ],
)
def test_send_as_choices(send_as: str, kind: str, param: str | None) -> None:
    """send_as is header, subprotocol or query:<param>, split into kind and parameter."""
    cfg = build(config(targets=[target(**jwt(secret="s", send_as=send_as))]))
    assert cfg.targets[0].auth is not None
    token = cfg.targets[0].auth.jwt
    assert (token.send_as_kind, token.query_param) == (kind, param)


@pytest.mark.parametrize("send_as", ["cookie", "query:", "query:a b", "query:a&b", "Header"])
def test_send_as_rejects_others(send_as: str) -> None:
    """Any other send_as, or a query parameter that would need encoding, is a problem."""
    [problem] = problems(config(targets=[target(**jwt(secret="s", send_as=send_as))]))
    assert problem.startswith("targets[0].auth.jwt.send_as: must be header, subprotocol or query")


def test_claims_must_be_json_and_leave_iat_exp_to_ttl() -> None:
    """Claims must be JSON values, and iat/exp come from ttl."""
    fixed = jwt(secret="s", claims={"exp": 1, "iat": 2, "sub": "x"})
    assert problems(config(targets=[target(**fixed)])) == [
        "targets[0].auth.jwt.claims: iat and exp are set from ttl; remove them from claims"
    ]
    dated = jwt(secret="s", claims={"since": dt.date(2024, 1, 1)})
    [problem] = problems(config(targets=[target(**dated)]))
    assert problem.startswith("targets[0].auth.jwt.claims: must hold only JSON values")


def test_authorization_header_conflicts_with_jwt_header() -> None:
    """A static Authorization header is refused when the JWT goes in that header."""
    clash = target(headers={"authorization": "Basic x"}, **jwt(secret="s"))
    assert problems(config(targets=[clash])) == [
        "targets[0].headers: Authorization is set by auth.jwt (send_as: header)"
    ]
    fine = target(headers={"Authorization": "Basic x"}, **jwt(secret="s", send_as="query:t"))
    assert build(config(targets=[fine])).targets[0].headers == {"Authorization": "Basic x"}


# --- schedules -------------------------------------------------------------------------


def test_schedule_defaults_to_every_15_minutes() -> None:
    """Without every or cron, a schedule runs every 15 minutes."""
    s = build(config(scenarios=[scenario(schedule={"jitter": "30s"})])).scenarios[0]
    assert (s.schedule.every, s.schedule.jitter, s.schedule.cron) == (900.0, 30.0, None)
    assert ScheduleConfig().every == 900.0
    explicit = {"every": "1m", "cron": None}
    assert build(config(scenarios=[scenario(schedule=explicit)])).scenarios[0].schedule.every == 60


def test_cron_schedule_is_validated() -> None:
    """cron is checked like crontab; a bad one is a problem naming the field."""
    schedule = {"cron": "*/30 * * * mon-fri", "timezone": "Europe/Paris"}
    s = build(config(scenarios=[scenario(schedule=schedule)])).scenarios[0].schedule
    assert (s.every, s.cron) == (None, "*/30 * * * mon-fri")
    assert s.tzinfo.key == "Europe/Paris"
    bad = {"cron": "61 * * * *", "timezone": "Mars/Olympus"}
    found = problems(config(scenarios=[scenario(schedule=bad)]))
    assert found[0].startswith("scenarios[0].schedule.cron: is not a valid cron expression:")
    assert found[1] == (
        "scenarios[0].schedule.timezone: is not a known time zone, like UTC or Europe/Paris"
    )


@pytest.mark.parametrize("timezone", ["", "/etc/localtime", "../UTC"])
def test_timezone_must_be_a_zone_key(timezone: str) -> None:
    """A time zone that is not an IANA key is a problem, not a crash."""
    found = problems(config(scenarios=[scenario(schedule={"timezone": timezone})]))
    assert found == [
        "scenarios[0].schedule.timezone: is not a known time zone, like UTC or Europe/Paris"
    ]


def test_schedule_takes_every_or_cron_not_both() -> None:
    """every and cron together are a problem; jitter must stay below every."""
    both = {"every": "1m", "cron": "* * * * *"}
    assert problems(config(scenarios=[scenario(schedule=both)])) == [
        "scenarios[0].schedule: set every or cron, not both"
    ]
    jittery = {"every": "1m", "jitter": "1m"}
    assert problems(config(scenarios=[scenario(schedule=jittery)])) == [
        "scenarios[0].schedule.jitter: must be less than every"
    ]


# --- load shapes -----------------------------------------------------------------------


def test_spike_batches_fit_the_connections() -> None:
    """A spike has at least 1 connection and no more batches than connections."""
    spike = {"connections": 25, "batches": 3, "batch_interval": "1s"}
    s = build(config(scenarios=[scenario(spike=spike)])).scenarios[0]
    assert s.spike is not None
    assert (s.spike.total_connections, s.spike.batch_interval, s.load) == (25, 1.0, s.spike)
    assert problems(config(scenarios=[scenario(spike={"connections": 2, "batches": 3})])) == [
        "scenarios[0].spike.batches: must be ≤ connections (2)"
    ]
    assert problems(config(scenarios=[scenario(spike={"connections": 0, "batches": 0})])) == [
        "scenarios[0].spike.connections: must be ≥ 1",
        "scenarios[0].spike.batches: must be ≥ 1",
    ]


def test_ramp_steps_are_positive_and_sum_up() -> None:
    """A ramp has at least one step, each at least 1 connection; the total is their sum."""
    ramp = {"steps": [5, 10, 15], "step_interval": "10s"}
    s = build(config(scenarios=[scenario(spike=None, ramp=ramp)])).scenarios[0]
    assert s.ramp is not None
    assert (s.ramp.total_connections, s.ramp.step_interval, s.load) == (30, 10.0, s.ramp)
    bad = {"steps": [1, 0]}
    assert problems(config(scenarios=[scenario(spike=None, ramp=bad)])) == [
        "scenarios[0].ramp.steps[1]: must be ≥ 1",
        "scenarios[0].ramp.step_interval: required",
    ]
    empty = {"steps": [], "step_interval": 1}
    assert problems(config(scenarios=[scenario(spike=None, ramp=empty)])) == [
        "scenarios[0].ramp.steps: must have at least 1 item(s)"
    ]


def test_scenario_needs_exactly_one_of_spike_and_ramp() -> None:
    """Both spike and ramp, or neither, is a problem."""
    ramp = {"steps": [1], "step_interval": 0}
    assert problems(config(scenarios=[scenario(ramp=ramp)])) == [
        "scenarios[0]: set one of spike, ramp or churn, not spike and ramp"
    ]
    assert problems(config(scenarios=[{"name": "idle"}])) == [
        "scenarios[0]: needs spike, ramp or churn"
    ]


def test_stable_connections_count_toward_the_peak() -> None:
    """total_connections adds the stable connections to the spike's."""
    stable = {"connections": 10, "ping_interval": "500ms", "mode": "ping", "timeout": "3s"}
    s = build(config(scenarios=[scenario(stable=stable)])).scenarios[0]
    assert s.stable is not None
    assert (s.stable.ping_interval, s.stable.mode, s.stable.timeout) == (0.5, "ping", 3.0)
    assert s.total_connections == 15
    assert problems(config(scenarios=[scenario(stable={"connections": 0, "mode": "x"})])) == [
        "scenarios[0].stable.connections: must be ≥ 1",
        "scenarios[0].stable.mode: must be 'auto', 'ping' or 'echo'",
    ]


def test_scenario_values_are_checked() -> None:
    """hold, timeout, baseline, recovery, thresholds and abort reject out-of-range values."""
    bad = scenario(
        hold="-1s",
        timeout=0,
        baseline={"probes": 0, "interval": "x"},
        recovery={"consecutive": 0, "tolerance": -0.1, "probe_interval": 0},
        thresholds={"success_ratio": 1.5, "handshake_p95": "-1s", "dropped_stable": -1},
        abort={"error_ratio": 0, "min_attempts": 0},
    )
    assert problems(config(scenarios=[bad])) == [
        "scenarios[0].hold: must not be negative",
        "scenarios[0].baseline.probes: must be ≥ 1",
        "scenarios[0].baseline.interval: expected a duration like 250ms, 5s or 15m, got 'x'",
        "scenarios[0].recovery.probe_interval: must be > 0",
        "scenarios[0].recovery.consecutive: must be ≥ 1",
        "scenarios[0].recovery.tolerance: must be ≥ 0",
        "scenarios[0].thresholds.success_ratio: must be ≤ 1",
        "scenarios[0].thresholds.handshake_p95: must not be negative",
        "scenarios[0].thresholds.dropped_stable: must be ≥ 0",
        "scenarios[0].abort.error_ratio: must be > 0",
        "scenarios[0].abort.min_attempts: must be ≥ 1",
        "scenarios[0].timeout: must be > 0",
    ]


def test_scenario_values_parse() -> None:
    """Thresholds, abort and timeout take their documented forms."""
    s = scenario(
        hold="2s",
        timeout="5m",
        thresholds={"success_ratio": 0.99, "message_rtt_p95": "500ms", "recovery": "60s"},
        abort={"error_ratio": 1},
        stable={"connections": 1},
    )
    s["thresholds"]["dropped_stable"] = 0
    got = build(config(scenarios=[s])).scenarios[0]
    assert (got.hold, got.timeout, got.abort.error_ratio) == (2.0, 300.0, 1.0)
    t = got.thresholds
    assert (t.success_ratio, t.message_rtt_p95, t.recovery, t.dropped_stable) == (0.99, 0.5, 60, 0)


def test_dropped_stable_threshold_needs_stable_connections() -> None:
    """A dropped_stable threshold without stable connections is a problem."""
    assert problems(config(scenarios=[scenario(thresholds={"dropped_stable": 0})])) == [
        "scenarios[0].thresholds.dropped_stable: needs stable connections"
    ]


def test_scenario_targets_are_unique_and_non_empty() -> None:
    """A scenario's target list is not empty and names each target once."""
    assert problems(config(scenarios=[scenario(targets=[])])) == [
        "scenarios[0].targets: must have at least 1 item(s)"
    ]
    assert problems(config(scenarios=[scenario(targets=["chat", "chat"])])) == [
        "scenarios[0].targets[1]: repeats 'chat'"
    ]
    assert build(config(scenarios=[scenario(targets=None)])).scenarios[0].targets is None


# --- rules across the config -----------------------------------------------------------


def test_names_are_unique() -> None:
    """Two targets or two scenarios with the same name are problems."""
    data = {
        "targets": [target(), target(), target()],
        "scenarios": [scenario(), scenario(name="other"), scenario()],
    }
    assert problems(data) == [
        "targets[1].name: another target is called 'chat' (targets[0])",
        "targets[2].name: another target is called 'chat' (targets[0])",
        "scenarios[2].name: another scenario is called 'burst' (scenarios[0])",
    ]


def test_scenario_targets_must_exist() -> None:
    """A scenario naming an unknown target is a problem at that entry."""
    assert problems(config(scenarios=[scenario(targets=["chat", "nope", "gone"])])) == [
        "scenarios[0].targets[1]: unknown target 'nope'",
        "scenarios[0].targets[2]: unknown target 'gone'",
    ]


def test_scenario_must_fit_max_connections() -> None:
    """Spike plus stable connections plus the probes' reserve above the limit is a problem."""
    data = config(
        limits={"max_connections": 34},
        scenarios=[
            scenario(spike={"connections": 25}, stable={"connections": 5}),
            scenario(name="big", spike={"connections": 25}, stable={"connections": 6}),
            scenario(name="ramp", spike=None, ramp={"steps": [20, 20], "step_interval": 1}),
        ],
    )
    assert problems(data) == [
        "scenarios[1]: opens 31 connections at its peak; with 4 kept for its probes that is"
        " more than limits.max_connections (34)",
        "scenarios[2]: opens 40 connections at its peak; with 4 kept for its probes that is"
        " more than limits.max_connections (34)",
    ]


def test_stable_echo_mode_needs_echo_on_every_target() -> None:
    """stable.mode echo is a problem when one of the scenario's targets has no echo."""
    echo = {"payload": "p", "match": "p"}
    stable = {"connections": 1, "mode": "echo"}
    data = {
        "targets": [target(echo=echo), target(name="plain"), target(name="bare")],
        "scenarios": [
            scenario(targets=["chat"], stable=stable),
            scenario(name="all", stable=stable),
        ],
    }
    assert problems(data) == ["scenarios[1].stable.mode: echo needs echo on target 'plain', 'bare'"]


def test_cross_field_problems_are_reported_together() -> None:
    """Duplicate names, unknown targets and limits are all reported at once."""
    data = {
        "limits": {"max_connections": 8},
        "targets": [target(), target()],
        "scenarios": [scenario(targets=["nope"]), scenario(name="x")],
    }
    assert problems(data) == [
        "targets[1].name: another target is called 'chat' (targets[0])",
        "scenarios[0].targets[0]: unknown target 'nope'",
        "scenarios[1]: opens 5 connections at its peak; with 4 kept for its probes that is"
        " more than limits.max_connections (8)",
    ]


def test_lookup_by_name() -> None:
    """target() and scenario() find by name and raise KeyError for unknown names."""
    cfg = build(config())
    assert cfg.target("chat") is cfg.targets[0]
    assert cfg.scenario("burst") is cfg.scenarios[0]
    with pytest.raises(KeyError, match="nope"):
        cfg.target("nope")
    with pytest.raises(KeyError, match="nope"):
        cfg.scenario("nope")


def test_pairs_cover_every_scenario_and_its_targets_in_order() -> None:
    """pairs() lists each scenario with its targets: all of them, or those it names, in order."""
    cfg = build(
        {
            "targets": [target(name="a"), target(name="b"), target(name="c")],
            "scenarios": [scenario(name="all"), scenario(name="some", targets=["c", "a"])],
        }
    )
    assert [(t.name, s.name) for t, s in cfg.pairs()] == [
        ("a", "all"),
        ("b", "all"),
        ("c", "all"),
        ("c", "some"),
        ("a", "some"),
    ]


# --- what the core takes from the config --------------------------------------------------


def test_prober_limits_come_from_the_prober_section() -> None:
    """ProberConfig.limits() carries the three saturation limits, as configured."""
    prober = {"max_loop_lag_p99": "50ms", "max_start_lateness_p99": "1s", "max_cpu_percent": 80}
    assert build(config(prober=prober)).prober.limits() == ProberLimits(
        max_loop_lag_p99=0.05, max_start_lateness_p99=1.0, max_cpu_percent=80.0
    )


def test_threshold_limits_come_from_the_thresholds_section() -> None:
    """ThresholdsConfig.limits() carries every threshold; the unset ones stay None."""
    thresholds = {"success_ratio": 0.99, "handshake_p95": "1s", "recovery": "60s"}
    cfg = build(config(scenarios=[scenario(thresholds=thresholds)]))
    assert cfg.scenarios[0].thresholds.limits() == ThresholdLimits(
        success_ratio=0.99, handshake_p95=1.0, recovery=60.0
    )
    every = {
        "success_ratio": 0.5,
        "handshake_p95": 1,
        "first_message_p95": 2,
        "message_rtt_p95": 3,
        "recovery": 4,
        "dropped_stable": 5,
        "dropped_held": 6,
    }
    cfg = build(config(scenarios=[scenario(thresholds=every, stable={"connections": 1})]))
    assert asdict(cfg.scenarios[0].thresholds.limits()) == every
