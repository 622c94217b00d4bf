"""``SPIKEWATCH_*`` variables over the YAML file: pydantic-settings' env source, with list indexes.

``SPIKEWATCH_LIMITS__MAX_CONNECTIONS=50`` sets ``limits.max_connections``; a number indexes
a list (``SPIKEWATCH_TARGETS__0__URL``), and the index just past the end adds an item.
Names ignore case. Values are YAML (``[1, 2]``, ``{a: b}``, ``null``), except for fields
that hold text (names, URLs, paths, secrets), which take the value as written, so that a
token like ``0777`` or ``yes`` stays a string. A variable that sets a whole section
(``SPIKEWATCH_LIMITS={max_connections: 10}``) replaces the file's section.

:class:`EnvironmentSource` is pydantic-settings' ``EnvSettingsSource``. The library reads
the variables and folds their case (``_load_env_vars``, here over the mapping given), takes
prefix and delimiter from the settings' ``model_config``, names each section's variable
(``_extract_field_info``) and finds the field that a name segment stands for, through
optional and nested models and mappings (``next_field``).

Hand-written, the merge of list indexes (pydantic-settings issue #376): the library's
``explode_env_vars`` builds one mapping per section in which the ``0`` of
``SPIKEWATCH_TARGETS__0__URL`` is a mapping key, and its merge of sources replaces a list
whole, so the file's targets would become ``{"0": {"url": ...}}``. Here each variable is
applied to a copy of the file's document instead, outer sections first, where a number
indexes a list; the source returns that merged document. The library's mapping would
also lose which variable set what: a problem that one variable causes names it, and a
validation problem at a path a variable set ends with "(from VAR)".
"""

from __future__ import annotations

import copy
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Union

import yaml
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from spikewatch.config.problems import join_path, path_key
from spikewatch.config.yaml_source import YamlFileSource, load_yaml, yaml_message
from spikewatch.errors import ConfigProblem

__all__ = ["EnvironmentSource", "Overrides"]

# YAML spellings of null, for text fields that may be unset from the environment.
_NULLS: Final = frozenset({"", "~", "null", "Null", "NULL"})


@dataclass
class Overrides:
    """What the environment changed: where each variable landed, and what went wrong."""

    origins: dict[str, str] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)

    def origin_of(self, path: str) -> str | None:
        """Return the variable that set ``path`` or a section around it, if any."""
        best: str | None = None
        for at in self.origins:
            inside = path == at or path.startswith((f"{at}.", f"{at}["))
            if inside and (best is None or len(at) > len(best)):
                best = at
        return None if best is None else self.origins[best]


class EnvironmentSource(EnvSettingsSource):
    """``SPIKEWATCH_*`` variables, applied to the YAML file's document: a settings source.

    ``environ`` defaults to the process environment. Names match in any case, whatever
    ``case_sensitive`` says (that is for the init kwargs). What went wrong, and which
    variable set which path, is collected in :attr:`overrides`.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        file: YamlFileSource,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._file = file
        self.overrides = Overrides()
        self._document: dict[str, Any] | None = None
        super().__init__(settings_cls, case_sensitive=False)
        assert self.env_nested_delimiter, "the environment source needs env_nested_delimiter"
        self._delimiter: str = self.env_nested_delimiter

    def _load_env_vars(self) -> Mapping[str, str | None]:
        """Return the variables of ``environ`` (not always the process's), names folded."""
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Return the section ``field_name`` (``__call__`` returns them all at once)."""
        return self().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.document().items() if k not in self.current_state}

    def document(self) -> dict[str, Any]:
        """Return the file's document with the variables applied (applied on the first call)."""
        if self._document is None:  # once: a second run would report its problems again
            # A shallow copy is enough: each variable is applied to a deep copy of its own.
            document = dict(self._file.document())
            for segments, name, value in self._variables():
                # On a copy: a variable that fails halfway must not leave empty sections
                # behind, which would be reported as problems of their own.
                trial = copy.deepcopy(document)
                if self._apply(trial, segments, name, value):
                    document = trial
            self._document = document
        return self._document

    def _variables(self) -> list[tuple[list[str], str, str]]:
        """Return the variables of the config's sections: (segments, name as written, value)."""
        sections = [
            (field_name, env_name)
            for field_name, field_info in self.settings_cls.model_fields.items()
            for _, env_name, _ in self._extract_field_info(field_info, field_name)
        ]
        found: list[tuple[list[str], str, str]] = []
        # The variables as written, not the library's folded env_vars: two names that
        # differ only in case are both applied, in order, each with its own problems.
        for name, value in self._environ.items():
            folded = self._apply_case_sensitive(name)
            for field_name, env_name in sections:
                # Only the config's own sections: SPIKEWATCH_CONFIG and other settings
                # that share the prefix are not overrides.
                if not (folded == env_name or folded.startswith(env_name + self._delimiter)):
                    continue
                segments = [field_name]
                if folded != env_name:
                    segments += folded[len(env_name) + len(self._delimiter) :].split(
                        self._delimiter
                    )
                if all(segments):
                    found.append((segments, name, value))
                else:
                    self.overrides.problems.append(
                        ConfigProblem("", f"{name}: empty name between '{self._delimiter}'")
                    )
        # Outer sections first, so that SPIKEWATCH_SERVER={...} does not wipe out a deeper
        # SPIKEWATCH_SERVER__LISTEN; numeric segments in numeric order, so that appends
        # line up.
        found.sort(key=lambda item: (len(item[0]), [_segment_order(s) for s in item[0]]))
        return found

    def _apply(self, data: dict[Any, Any], segments: list[str], name: str, raw: str) -> bool:
        """Set one variable's value in ``data``; return False after adding a problem."""
        node: dict[Any, Any] | list[Any] = data
        annotation: Any = self.settings_cls
        path = ""
        origins: dict[str, str] = {}
        for depth, segment in enumerate(segments):
            if isinstance(node, list):
                problem = _index_problem(node, segment, name)
                if problem:
                    self.overrides.problems.append(ConfigProblem(path, problem))
                    return False
                key: str | int = int(segment)
                if key == len(node):
                    node.append(None)
                    # A new item: its missing fields are this variable's doing too.
                    origins[join_path(path, path_key(key))] = name
            else:
                key = _dict_key(node, segment)
            annotation = self._child_annotation(annotation, key)
            path = join_path(path, path_key(key))
            if depth < len(segments) - 1:
                child = _get(node, key)
                if not isinstance(child, dict | list):
                    # Missing or a scalar: the environment wins.
                    wants_list = _is_index(segments[depth + 1]) and _is_sequence(annotation)
                    child = [] if wants_list else {}
                    _put(node, key, child)
                node = child
        try:
            value = _env_value(raw, annotation)
        except yaml.YAMLError as exc:
            self.overrides.problems.append(ConfigProblem(path, f"{name}: {yaml_message(exc)}"))
            return False
        _put(node, key, value)
        self.overrides.origins.update(origins)
        self.overrides.origins[path] = name
        return True

    def _child_annotation(self, annotation: Any, key: str | int) -> Any:
        """Return the type at ``key`` under ``annotation``; None where the schema has none."""
        parent = _strip(annotation)
        if typing.get_origin(parent) in (tuple, list):
            # The library has no list index: the items' type, by hand (whatever the key,
            # which is not an index only where a variable put a mapping in the list's place).
            args = typing.get_args(parent)
            return args[0] if args else None
        # Exact: a key the file spells in another case is an unknown field, not this one.
        found = self.next_field(annotation, str(key), case_sensitive=True)
        return found.annotation if isinstance(found, FieldInfo) else found


def _is_index(segment: str) -> bool:
    # ASCII only: str.isdigit() also holds for "²", which int() refuses, and for digits of
    # other scripts, which nobody means as a list index.
    return segment.isascii() and segment.isdigit()


def _segment_order(segment: str) -> tuple[int, int, str]:
    return (0, int(segment), "") if _is_index(segment) else (1, 0, segment)


def _index_problem(node: list[Any], segment: str, name: str) -> str | None:
    if not _is_index(segment):
        return f"{name}: expected a list index"
    if int(segment) > len(node):
        return f"{name}: index {segment} is past the end (the list has {len(node)} items)"
    return None


def _get(node: dict[Any, Any] | list[Any], key: str | int) -> Any:
    if isinstance(node, list):
        return node[int(key)]
    return node.get(key)


def _put(node: dict[Any, Any] | list[Any], key: str | int, value: Any) -> None:
    if isinstance(node, list):
        node[int(key)] = value
    else:
        node[key] = value


def _dict_key(node: dict[Any, Any], segment: str) -> str:
    # Names are lowercased by then; a key the file already has matches in any case.
    for existing in node:
        if isinstance(existing, str) and existing.lower() == segment:
            return existing
    return segment


def _strip(annotation: Any) -> Any:
    """Return the annotation without Annotated and None; None when it stays ambiguous."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _strip(members[0]) if len(members) == 1 else None
    return annotation


def _is_sequence(annotation: Any) -> bool:
    return typing.get_origin(_strip(annotation)) in (tuple, list)


def _allows_none(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return type(None) in typing.get_args(annotation)
    return False


def _env_value(raw: str, annotation: Any) -> Any:
    if _strip(annotation) in (str, SecretStr, Path):
        return None if raw in _NULLS and _allows_none(annotation) else raw
    return load_yaml(raw)
