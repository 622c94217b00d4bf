"""The base of every config section, and the small field types they share."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ["ConfigSection", "Name", "Ratio", "compile_regex", "lower_text"]


class ConfigSection(BaseModel):
    """A section of the config: frozen, no unknown fields, never echoing its input."""

    # hide_input_in_errors: str(ValidationError) would otherwise echo the input, secrets
    # included, to whoever prints it.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


_NAME = re.compile(r"[a-z0-9_-]+")


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must use only a-z, 0-9, _ and - (it becomes a metric label)")
    return value


def lower_text(value: object) -> object:
    """Lowercase a string (for choices that ignore case); leave anything else to validation."""
    return value.lower() if isinstance(value, str) else value


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern``; raise ValueError with a message for the field if it is not one."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression: {exc}") from None


#: A target's or scenario's name: it becomes a metric label.
Name = Annotated[str, AfterValidator(_check_name)]
Ratio = Annotated[float, Field(ge=0, le=1)]
