"""Fill an echo template: ``{seq}`` and ``{conn}`` become the message and connection numbers."""

from __future__ import annotations


def fill_template(template: str, *, seq: int, conn: int) -> str:
    """Return ``template`` with ``{seq}`` and ``{conn}`` replaced by the numbers.

    Plain replacement, not ``str.format``: payloads are often JSON, full of braces. The
    numbers are plain digits, so a regex template needs no escaping for them either.
    Keyword-only: the two numbers are easy to swap.
    """
    return template.replace("{seq}", str(seq)).replace("{conn}", str(conn))
