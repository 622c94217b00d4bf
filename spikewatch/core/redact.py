"""Secrets masked by value in text that came from a target, and that text made printable.

A target may echo anything it was sent back into the text spikewatch keeps of it (a
welcome that did not match, a close reason, an HTTP reason phrase, the bytes an error
quotes): the configured credentials, or the JWT minted for the connection. The runner
passes every such text through a :class:`Redactor` before the run's result is built, so
the result, the metrics, the API, the status page, the logs and ``spikewatch once``
never hold a secret (issue 12, item 7).

What is masked, each occurrence replaced by :data:`MASK`:

- every configured secret value of at least :data:`MIN_SECRET_CHARS` characters, as
  it is, as ``repr()`` shows it inside quotes (details quote with ``!r``), as
  ``repr()`` of its UTF-8 bytes shows it, and percent-encoded (a query value echoed
  in a URL);
- anything shaped like a JWT: three base64url segments, the first starting ``eyJ``
  (``{"``). The tokens minted per connection are not remembered (there may be
  thousands per run, and a worker process mints its own); the shape catches each of
  them, and any other token a target reflects.

Values shorter than :data:`MIN_SECRET_CHARS` are not masked: they would mask ordinary
words and numbers in the text ("json", "true", a port), and a credential that short is
not one a mask protects.

A secret cut short by a detail's truncation (a quote of the first 80 or 120
characters) is masked too: a start of one of its forms, at least
:data:`MIN_SECRET_CHARS` long, that ends where the text, a quote or an ellipsis ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote

__all__ = [
    "JWT_PATTERN",
    "LINE_LIMIT",
    "MASK",
    "MIN_SECRET_CHARS",
    "NO_REDACTION",
    "Redactor",
    "printable",
]

#: What a secret is shown as (the same mask as ``check-config``'s).
MASK: Final = "***"

#: Shorter configured values are not masked (see the module's docstring).
MIN_SECRET_CHARS: Final = 8

#: A JWT (JWS compact form): header ``eyJ...``, payload, signature (empty for ``none``).
JWT_PATTERN: Final = r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"

#: The longest line :func:`printable` returns, ellipsis included.
LINE_LIMIT: Final = 300

_ELLIPSIS: Final = "…"

#: C0 controls, DEL and C1 controls: what a terminal may act on instead of showing.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


def _forms(value: str) -> set[str]:
    """Return the ways ``value`` may appear in a detail."""
    forms = {value, repr(value)[1:-1], quote(value, safe="")}
    forms.add(repr(value.encode())[2:-1])
    return {f for f in forms if f}


class Redactor:
    """Masks a fixed set of secret values, and every JWT, in text.

    Built once per config (:func:`spikewatch.config.render.secret_values` lists its
    values); :meth:`redact` is pure and cheap enough for every attempt's detail.
    """

    __slots__ = ("_forms", "_pattern")

    def __init__(self, secrets: Iterable[str] = (), *, jwt: bool = True) -> None:
        forms: set[str] = set()
        for value in secrets:
            if len(value) >= MIN_SECRET_CHARS:
                forms |= _forms(value)
        # Longest first, so that a secret containing another is masked whole.
        parts = [re.escape(f) for f in sorted(forms, key=lambda f: (-len(f), f))]
        if jwt:
            parts.insert(0, JWT_PATTERN)
        self._pattern = re.compile("|".join(parts)) if parts else None
        self._forms = tuple(sorted(forms, key=lambda f: (-len(f), f)))

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret and every JWT in it replaced by :data:`MASK`."""
        if self._pattern is None or not text:
            return text
        text = self._pattern.sub(MASK, text)
        for form in self._forms:
            text = _mask_cut(text, form)
        return text

    def __call__(self, text: str) -> str:
        """Same as :meth:`redact`."""
        return self.redact(text)


#: Where a truncated quote ends: the text's end, a closing quote, an ellipsis.
_CUT_ENDS: Final = frozenset("'\"….")


def _mask_cut(text: str, form: str) -> str:
    """Mask each start of ``form`` (at least MIN_SECRET_CHARS long) that a cut ended."""
    head = form[:MIN_SECRET_CHARS]
    start = text.find(head)
    while start >= 0:
        end = start + MIN_SECRET_CHARS
        while end < len(text) and end - start < len(form) and text[end] == form[end - start]:
            end += 1
        if end == len(text) or text[end] in _CUT_ENDS:
            text = text[:start] + MASK + text[end:]
            end = start + len(MASK)
        start = text.find(head, end)
    return text


#: A redactor that masks nothing (a prober built by hand, in tests).
NO_REDACTION: Final = Redactor(jwt=False)


def printable(line: str, limit: int = LINE_LIMIT) -> str:
    """Return ``line`` safe for a terminal: control characters as ``\\xNN``, at most ``limit``.

    C0 controls (line breaks and escapes included), DEL and C1 controls are shown
    escaped, so that target text can neither move the cursor, set the title, ring the
    bell nor forge a line; a longer line is cut and ends with an ellipsis.
    """
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line)
    if len(shown) > limit:
        shown = shown[: limit - len(_ELLIPSIS)] + _ELLIPSIS
    return shown
