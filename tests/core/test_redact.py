"""The redactor masks configured secrets and JWTs by value; printable() makes a line safe."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.phases import SpikePhase, StablePhase
from spikewatch.core.redact import (
    LINE_LIMIT,
    MASK,
    MIN_SECRET_CHARS,
    NO_REDACTION,
    Redactor,
    printable,
)
from spikewatch.engine.runner import redact_record
from tests.core.test_run_result import failed, record

SECRET = "s3cr3t-VALUE-ä/é"
#: The JWT minted for one connection: three base64url segments, the header "eyJ...".
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize(
    ("form", "shown"),
    [
        ("as it is", SECRET),
        ("repr", repr(SECRET)),
        ("repr of its bytes", repr(SECRET.encode())),
        ("percent-encoded", quote(SECRET, safe="")),
    ],
)
def test_each_form_of_a_secret_is_masked(form: str, shown: str) -> None:
    """A configured value is masked as it is, quoted by repr (str or bytes), percent-encoded."""
    text = Redactor([SECRET]).redact(f"welcome did not match: {shown} (end)")
    assert SECRET not in text, form
    assert shown.strip("b'") not in text, form
    assert MASK in text
    assert text.endswith(" (end)")


def test_any_jwt_is_masked_without_being_configured() -> None:
    """A JWT-shaped token is masked (the minted ones are not remembered); other text stays."""
    redact = Redactor()
    assert redact(f"upgrade answered 401 Bearer {JWT} refused") == (
        f"upgrade answered 401 Bearer {MASK} refused"
    )
    assert redact("eyJ alone, a.b.c and 1.2.3") == "eyJ alone, a.b.c and 1.2.3"


def test_short_values_are_not_masked() -> None:
    """Values under MIN_SECRET_CHARS (ports, 'json', 'true') would mask ordinary text."""
    short = "x" * (MIN_SECRET_CHARS - 1)
    just = "y" * MIN_SECRET_CHARS
    redact = Redactor(["", "json", short, just])
    assert redact(f"json {short} {just}") == f"json {short} {MASK}"


def test_the_longest_secret_is_masked_whole() -> None:
    """A secret that contains another is masked in one piece, leaving no tail of it."""
    redact = Redactor(["abcdefgh", "abcdefgh-and-more"])
    assert redact("[abcdefgh-and-more]") == f"[{MASK}]"


def test_no_redaction_leaves_text_alone() -> None:
    """The default of a hand-built prober masks nothing, JWTs included."""
    assert NO_REDACTION.redact(JWT) == JWT
    assert Redactor([SECRET]).redact("") == ""


def test_redact_record_masks_every_target_text() -> None:
    """Every attempt's detail, the stable lost reason and the run's error are masked."""
    attempt = failed(Phase.SPIKE, 7, Outcome.HTTP_STATUS, f"upgrade answered 401 {SECRET}")
    stable = StablePhase(1, (), rtts=(), dropped=1, drop_example=f"closed with 1008 ({JWT})")
    run = record(spike=SpikePhase((attempt,)), stable=stable, error=f"internal error: {SECRET!r}")
    run = redact_record(run, Redactor([SECRET]))
    assert attempt.detail == f"upgrade answered 401 {MASK}"
    assert run.stable is not None
    assert run.stable.drop_example == f"closed with 1008 ({MASK})"
    assert run.error == f"internal error: '{MASK}'"
    assert redact_record(record(), NO_REDACTION).error is None


def test_printable_escapes_controls_and_bounds_the_line() -> None:
    """C0 (line breaks too), DEL and C1 are shown as \\xNN; a long line ends in an ellipsis."""
    assert printable("a\x1b[2Jb\x07\r\nc\x7f\x9bd é") == "a\\x1b[2Jb\\x07\\x0d\\x0ac\\x7f\\x9bd é"
    long = printable("z" * 10_000)
    assert len(long) == LINE_LIMIT
    assert long.endswith("…")
    assert printable("z" * LINE_LIMIT) == "z" * LINE_LIMIT


@pytest.mark.parametrize("cut", [MIN_SECRET_CHARS, 12])
def test_a_secret_cut_by_a_quote_limit_is_masked(cut: int) -> None:
    """A detail that quotes only the start of a secret (text[:120]!r) masks that start."""
    redact = Redactor([SECRET])
    assert redact(f"welcome did not match: {SECRET[:cut]!r}") == f"welcome did not match: '{MASK}'"
    assert redact(f"tail {SECRET[:cut]}") == f"tail {MASK}"
    # A start of the secret that goes on with other text is ordinary text, left alone.
    assert redact(f"{SECRET[:cut]}zz and more") == f"{SECRET[:cut]}zz and more"
    assert redact(f"{SECRET[: MIN_SECRET_CHARS - 1]}'") == f"{SECRET[: MIN_SECRET_CHARS - 1]}'"
