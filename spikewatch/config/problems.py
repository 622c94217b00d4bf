"""Problems with a config: how the models raise them, and how pydantic's errors become them.

Every failure ends as a :class:`~spikewatch.errors.ConfigProblem` at a readable field path
(``scenarios[0].spike.batches: must be ≥ 1``). A model's rule that spans fields raises one
pydantic error that carries several problems, each at its own path (:func:`invalid`);
:func:`problems_from` turns a ``ValidationError`` into problems. Messages come from
pydantic's message, never its input, so a secret never reaches a log.

Hand-written: pydantic and pydantic-settings report errors as ``loc`` tuples and English
messages that quote the input ("Input should be ..."); neither has a way to word a problem
for a user, to attach several problems to one rule, or to show a bad mapping key in place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from spikewatch.errors import ConfigProblem

__all__ = [
    "PROBLEMS_ERROR_TYPE",
    "Problems",
    "invalid",
    "join_path",
    "os_error_reason",
    "path_key",
    "problems_from",
    "with_origin",
]

#: The pydantic error type a model raises for rules that span fields. Its context holds
#: ``problems``: pairs of (path relative to the model, message), one per problem.
PROBLEMS_ERROR_TYPE: Final = "spikewatch_problems"

#: (path relative to a model, message) pairs, as a model's rule collects them.
Problems = list[tuple[str, str]]


def path_key(key: str | int) -> str:
    """Return ``key`` as a path segment: ``.name``, ``[0]``, or ``["odd key"]``."""
    if isinstance(key, int):
        return f"[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
        return f".{key}"
    # JSON quoting escapes control characters, so a path never garbles a terminal.
    return f"[{json.dumps(key)}]"


def join_path(base: str, relative: str) -> str:
    """Return the path ``relative`` (``.x``, ``[0]`` or ``x``) below ``base``."""
    if not relative:
        return base
    if not base:
        return relative.removeprefix(".")
    return base + relative if relative.startswith((".", "[")) else f"{base}.{relative}"


def invalid(problems: Sequence[tuple[str, str]]) -> PydanticCustomError:
    """Return one pydantic error that carries several problems, each at its own path."""
    detail = "; ".join(f"{path}: {message}" if path else message for path, message in problems)
    return PydanticCustomError(
        PROBLEMS_ERROR_TYPE, "{detail}", {"detail": detail, "problems": tuple(problems)}
    )


def with_origin(problem: ConfigProblem, origin_of: Callable[[str], str | None]) -> ConfigProblem:
    """Add ``(from VAR)`` to ``problem`` when an environment variable set its path."""
    name = origin_of(problem.path) if problem.path else None
    if name is None or name in problem.message:
        return problem
    return ConfigProblem(problem.path, f"{problem.message} (from {name})")


def problems_from(exc: ValidationError, stand_ins: Mapping[str, Any]) -> list[ConfigProblem]:
    """Return the problems in ``exc``, in pydantic's order.

    ``stand_ins`` maps the names that stood in for top-level keys that are not strings
    (see :class:`~spikewatch.config.yaml_source.YamlFileSource`) back to those keys.
    """
    problems: list[ConfigProblem] = []
    errors = exc.errors(include_url=False, include_input=False)
    for error in errors:
        if error["type"] == "too_short" and _has_inner_error(error["loc"], errors):
            # pydantic counts only the items that validated: a list whose items all
            # failed is also "too short", which is noise next to the items' own problems.
            continue
        if error["loc"] and error["loc"][0] in stand_ins:
            # Where pydantic would have said so of the key itself (see YamlFileSource).
            key_loc = _key_loc(stand_ins[str(error["loc"][0])])
            problems.append(ConfigProblem(_format_loc((key_loc,)), _MESSAGES["invalid_key"]))
            continue
        path = _format_loc(error["loc"])
        if error["type"] == PROBLEMS_ERROR_TYPE:
            ctx = error.get("ctx") or {}
            problems.extend(
                ConfigProblem(join_path(path, relative), message)
                for relative, message in ctx.get("problems", ())
            )
        else:
            problems.append(ConfigProblem(path, _message(error)))
    return problems


def _key_loc(key: object) -> str | int:
    """Return the location pydantic gives a mapping key that is not a string."""
    if isinstance(key, int) and -(2**63) <= key < 2**63:
        return int(key)
    return repr(key)


def _has_inner_error(loc: tuple[str | int, ...], errors: list[ErrorDetails]) -> bool:
    return any(len(e["loc"]) > len(loc) and e["loc"][: len(loc)] == loc for e in errors)


def _format_loc(loc: tuple[str | int, ...]) -> str:
    # The models use no unions but Optional ones, so pydantic puts no union-member or
    # validator tags (function-after[...]) into a location: every part is a field name,
    # a mapping key or an index, except the marker for a bad mapping key.
    path = ""
    for part in loc:
        path += " (key)" if part == "[key]" else path_key(part)
    return path.removeprefix(".")


# Messages keyed by pydantic's error type; ctx fills the placeholders.
_MESSAGES: Final = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be ≥ {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be ≤ {le}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "string_too_short": "must not be empty",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "path_type": "must be a file path",
    "invalid_key": "keys must be strings",
    "recursion_loop": "refers to itself",
}


def _message(error: ErrorDetails) -> str:
    template = _MESSAGES.get(error["type"])
    if template is not None:
        # 1.0 reads better as 1 in "must be ≤ 1".
        ctx = {
            k: int(v) if isinstance(v, float) and v.is_integer() else v
            for k, v in (error.get("ctx") or {}).items()
        }
        return template.format(**ctx)
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    return message


def os_error_reason(exc: OSError) -> str:
    """Return why a file could not be read, without its path or contents."""
    return exc.strerror or type(exc).__name__
