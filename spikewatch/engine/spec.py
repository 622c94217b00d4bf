"""Everything about connecting to one target that is worked out once per run."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spikewatch.config.conversation import (
    HeartbeatConfig,
    KeepaliveConfig,
    MatcherConfig,
    SendConfig,
    parse_hex,
    step_names,
)
from spikewatch.core.echo_template import fill_template
from spikewatch.protocol.conversation import (
    Conversation,
    ConversationStep,
    Heartbeat,
    HexMatch,
    HexSend,
    JsonMatch,
    KeepaliveMessage,
    Matcher,
    Send,
    TextMatch,
    TextSend,
    default_measures,
    welcome_echo_conversation,
)
from spikewatch.protocol.deflate import DeflateOffer
from spikewatch.protocol.handshake import UpgradeRequest

if TYPE_CHECKING:
    from spikewatch.auth.jwt import TokenMinter
    from spikewatch.config import TargetConfig, TlsConfig

_PLACEHOLDERS = ("{seq}", "{conn}")


def build_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """Return the client TLS context a target's ``tls`` settings ask for."""
    ca_file = str(tls.ca_file) if tls.ca_file else None
    context = ssl.create_default_context(cafile=ca_file)
    if tls.cert_file is not None:
        key_file = str(tls.key_file) if tls.key_file else None
        context.load_cert_chain(str(tls.cert_file), key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # A WebSocket upgrade is HTTP/1.1; say so to servers that negotiate h2 by ALPN.
    context.set_alpn_protocols(["http/1.1"])
    return context


async def resolve(host: str, port: int) -> str:
    """Resolve ``host`` to the address to connect to (the first one the resolver gives).

    Raise :class:`socket.gaierror` when the name does not resolve. The lookup runs in a
    daemon thread of its own, not the loop's executor: ``asyncio.run`` joins executor
    threads at exit without a time limit, so a resolver stuck on an unreachable name
    server (30 s and more) would hold up a SIGTERM shutdown.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[Any]] = loop.create_future()

    def deliver(result: list[Any] | None, error: BaseException | None) -> None:
        if future.done():  # the run was cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or [])

    def lookup() -> None:
        try:
            result, error = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), None
        except OSError as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed while we looked up
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    infos = await future
    return str(infos[0][4][0])


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """A target's connection settings, resolved and precomputed for one run."""

    address: str
    port: int
    ssl: ssl.SSLContext | None
    server_hostname: str | None
    request: UpgradeRequest
    handshake_timeout: float
    close_timeout: float
    welcome: re.Pattern[str] | None
    welcome_timeout: float
    echo_payload: str | None
    echo_match: str | None
    echo_pattern: re.Pattern[str] | None
    echo_timeout: float
    max_message_bytes: int
    minter: TokenMinter | None = None
    send_as: Literal["header", "query", "subprotocol"] = "header"
    query_param: str | None = None
    #: The url's path and query and the header values, when any holds ``{conn}``: the
    #: request is then composed per connection (a SockJS session id, say), else once.
    per_connection: tuple[str, str, tuple[tuple[str, str], ...]] | None = None
    #: The permessage-deflate offer every request carries (target ``compression``).
    deflate: DeflateOffer | None = None
    #: The 101 answer's header that says the target's version (lower case), if one does.
    version_header: str | None = None
    #: The steps after the upgrade, compiled once; built from welcome and echo when None.
    conversation: Conversation | None = None

    def __post_init__(self) -> None:
        if self.conversation is None:
            echo = None
            if self.echo_payload is not None:
                assert self.echo_match is not None
                echo = short_form_echo(self.echo_payload, self.echo_pattern or self.echo_match)
            conversation = welcome_echo_conversation(
                self.welcome, self.welcome_timeout, echo, self.echo_timeout
            )
            object.__setattr__(self, "conversation", conversation)

    def request_for(self, conn: int) -> UpgradeRequest:
        """Return the upgrade request of connection ``conn`` (the shared one, unless the
        target's url or headers hold ``{conn}``)."""
        if self.per_connection is None:
            return self.request
        resource, host, headers = self.per_connection
        number = str(conn)
        return UpgradeRequest(
            resource=resource.replace("{conn}", number),
            host_header=host.replace("{conn}", number),
            headers=[(n, v.replace("{conn}", number)) for n, v in headers],
            subprotocols=self.request.subprotocols,
        )

    def render_request(self, key: bytes, conn: int) -> tuple[bytes, tuple[str, ...]]:
        """Return connection ``conn``'s upgrade request and the subprotocols it offers."""
        request = self.request if self.per_connection is None else self.request_for(conn)
        if self.minter is None:
            return request.render(key), self.request.subprotocols
        from spikewatch.auth.jwt import place_token  # noqa: PLC0415 - PyJWT loads cryptography (~9 MB RSS): only when JWTs are in use

        placement = place_token(self.send_as, self.minter.mint(conn), self.query_param)
        rendered = request.render(
            key,
            headers=placement.headers,
            query=placement.query,
            subprotocols=placement.subprotocols,
        )
        return rendered, (*self.request.subprotocols, *placement.subprotocols)

    def echo_for(self, conn: int, seq: int) -> tuple[str, re.Pattern[str]]:
        """Return the echo payload for message ``seq`` of ``conn`` and the pattern to match."""
        assert self.echo_payload is not None
        payload = fill_template(self.echo_payload, seq=seq, conn=conn)
        if self.echo_pattern is not None:
            return payload, self.echo_pattern
        assert self.echo_match is not None
        return payload, re.compile(fill_template(self.echo_match, seq=seq, conn=conn))


def short_form_echo(payload: str, match: str | re.Pattern[str]) -> tuple[Send, Matcher]:
    """Return the echo's send and match: ``{seq}`` and ``{conn}`` filled, braces literal."""
    return TextSend(payload), TextMatch(match, decode_binary=True)


def _send(config: SendConfig, captures: frozenset[str]) -> Send:
    if config.text is not None:
        return TextSend(config.text, captures)
    assert config.hex is not None
    return HexSend(config.hex, captures)


def _matcher(config: MatcherConfig, captures: frozenset[str]) -> Matcher:
    if config.match is not None:
        return TextMatch(config.match, captures)
    if config.json_fields is not None:
        return JsonMatch(config.json_fields, config.capture, known=captures)
    assert config.hex is not None
    return HexMatch(parse_hex(config.hex))


def _held_rules(
    captures: frozenset[str],
    heartbeats: tuple[HeartbeatConfig, ...],
    keepalive: KeepaliveConfig | None,
) -> tuple[tuple[Heartbeat, ...], KeepaliveMessage | None]:
    rules = tuple(
        Heartbeat(_matcher(h.when, captures), _send(h.answer, captures)) for h in heartbeats
    )
    if keepalive is None:
        return rules, None
    message = KeepaliveMessage(
        _send(keepalive.send, captures), _matcher(keepalive.expect, captures)
    )
    return rules, message


def build_conversation(target: TargetConfig) -> Conversation | None:
    """Compile the target's conversation, heartbeats and keepalive (None: the short form's
    welcome and echo alone, which :class:`ConnectionSpec` builds itself)."""
    if target.conversation is None:
        if not target.heartbeats and target.keepalive is None:
            return None
        welcome = target.welcome
        echo = target.echo
        short = welcome_echo_conversation(
            welcome.pattern if welcome is not None else None,
            welcome.timeout if welcome is not None else 0.0,
            short_form_echo(echo.payload, echo.match) if echo is not None else None,
            echo.timeout if echo is not None else 0.0,
        )
        rules, keepalive = _held_rules(frozenset(), target.heartbeats, target.keepalive)
        return dataclasses.replace(short, heartbeats=rules, keepalive=keepalive or short.keepalive)
    steps: list[ConversationStep] = []
    captures: frozenset[str] = frozenset()
    first = rtt = None
    for index, (config, name) in enumerate(
        zip(target.conversation, step_names(target.conversation), strict=True)
    ):
        if config.send is not None:
            steps.append(
                ConversationStep(name, send=_send(config.send, captures), repeat=config.repeat)
            )
            continue
        assert config.expect is not None
        steps.append(
            ConversationStep(
                name,
                expect=_matcher(config.expect, captures),
                timeout=config.timeout,
                others_fail=config.others == "fail",
                optional=config.optional,
                repeat=config.repeat,
            )
        )
        captures |= frozenset(config.expect.captures)
        if config.measure == "first_message":
            first = index
        elif config.measure == "round_trip":
            rtt = index
    compiled = tuple(steps)
    first, rtt = default_measures(compiled, first, rtt)
    rules, keepalive = _held_rules(captures, target.heartbeats, target.keepalive)
    return Conversation(compiled, rules, keepalive, first_message=first, round_trip=rtt)


def build_connection_spec(
    target: TargetConfig,
    address: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> ConnectionSpec:
    """Precompute what every connection to ``target`` at ``address`` shares."""
    if target.secure and ssl_context is None:
        ssl_context = build_ssl_context(target.tls)
    server_hostname = None
    if ssl_context is not None:
        server_hostname = target.tls.server_name or target.host
    welcome = target.welcome
    echo = target.echo
    echo_pattern = None
    if echo is not None and not any(p in echo.match for p in _PLACEHOLDERS):
        echo_pattern = re.compile(echo.match)
    minter = None
    send_as: Literal["header", "query", "subprotocol"] = "header"
    query_param = None
    if target.auth is not None:
        from spikewatch.auth.jwt import TokenMinter  # noqa: PLC0415 - PyJWT loads cryptography (~9 MB RSS): only when JWTs are in use

        jwt = target.auth.jwt
        minter = TokenMinter(
            algorithm=jwt.algorithm,
            key_material=jwt.key_material(),
            claims=jwt.claims,
            ttl=jwt.ttl,
        )
        send_as = jwt.send_as_kind
        query_param = jwt.query_param
    headers = tuple((n, v) for n, v in target.headers.items() if n.lower() != "host")
    deflate = None
    if target.compression is not None:
        deflate = target.compression.offer(target.max_message_bytes)
        if deflate is not None:
            headers = (*headers, ("Sec-WebSocket-Extensions", deflate.header_value))
    per_connection = None
    if any(
        "{conn}" in text for text in (target.resource, target.host_header, *target.headers.values())
    ):
        per_connection = (target.resource, target.host_header, headers)
    return ConnectionSpec(
        address=address,
        port=target.port,
        ssl=ssl_context,
        server_hostname=server_hostname,
        request=UpgradeRequest(
            resource=target.resource,
            host_header=target.host_header,
            headers=headers,
            subprotocols=target.subprotocols,
        ),
        per_connection=per_connection,
        handshake_timeout=target.handshake_timeout,
        close_timeout=target.close_timeout,
        welcome=welcome.pattern if welcome is not None else None,
        welcome_timeout=welcome.timeout if welcome is not None else 0.0,
        echo_payload=echo.payload if echo is not None else None,
        echo_match=echo.match if echo is not None else None,
        echo_pattern=echo_pattern,
        echo_timeout=echo.timeout if echo is not None else 0.0,
        max_message_bytes=target.max_message_bytes,
        minter=minter,
        send_as=send_as,
        query_param=query_param,
        deflate=deflate,
        version_header=target.version.header.lower()
        if target.version is not None and target.version.header is not None
        else None,
        conversation=build_conversation(target),
    )
