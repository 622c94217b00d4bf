"""Templates: ``{conn}``, ``{seq}`` and ``{<capture>}`` become their values; other braces stay.

Plain replacement, not ``str.format``: payloads are often JSON, full of braces. A bare
``{identifier}`` is a variable only when its name is known (a built-in or a capture
defined earlier); every other brace is literal text.
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = ["BUILTIN_NAMES", "fill_template", "split_template", "template_names"]

#: The variables every template knows: the connection number, and the number of sends on
#: the connection so far (the current one included).
BUILTIN_NAMES = frozenset({"conn", "seq"})

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_template(template: str, *, seq: int, conn: int) -> str:
    """Return ``template`` with ``{seq}`` and ``{conn}`` replaced by the numbers.

    The numbers are plain digits, so a regex template needs no escaping for them either.
    Keyword-only: the two numbers are easy to swap.
    """
    return template.replace("{seq}", str(seq)).replace("{conn}", str(conn))


def template_names(template: str) -> list[str]:
    """Return the name of every bare ``{identifier}`` in ``template``, in order."""
    return _VARIABLE.findall(template)


def split_template(template: str, known: Collection[str]) -> tuple[str, ...]:
    """Return ``template`` as literal, name, literal, ..., literal (an odd count).

    Only names in ``known`` are variables; any other ``{identifier}`` stays literal text.
    """
    parts: list[str] = []
    literal = ""
    last = 0
    for found in _VARIABLE.finditer(template):
        name = found.group(1)
        if name not in known:
            continue
        literal += template[last : found.start()]
        parts.extend((literal, name))
        literal = ""
        last = found.end()
    parts.append(literal + template[last:])
    return tuple(parts)
