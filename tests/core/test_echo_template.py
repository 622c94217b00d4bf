"""The one echo template filler, shared by the config and the engine."""

from __future__ import annotations

from spikewatch.core.echo_template import fill_template


def test_placeholders_become_the_numbers_and_braces_stay() -> None:
    """{seq} and {conn} are replaced everywhere; other braces (JSON) are left alone."""
    template = '{"seq":{seq},"conn":{conn},"again":"{seq}-{conn}","x":{}}'
    assert fill_template(template, seq=7, conn=3) == '{"seq":7,"conn":3,"again":"7-3","x":{}}'


def test_a_template_without_placeholders_is_returned_as_is() -> None:
    """Nothing to fill: the template comes back unchanged."""
    assert fill_template("ping", seq=1, conn=2) == "ping"
