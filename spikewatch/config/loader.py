"""Load the config: pydantic-settings sources, then validation, then the files it names.

:class:`~spikewatch.config.SpikewatchConfig` is a pydantic-settings ``BaseSettings``;
:func:`load_config` builds it from two sources of this module, in priority order (after
the init kwargs, which the loader does not use): :class:`EnvironmentSource`, then
:class:`YamlFileSource`. pydantic-settings' own environment source is not one of them: it
reads the ``0`` in ``SPIKEWATCH_TARGETS__0__URL`` as a mapping key, which replaces the
file's whole list of targets with a mapping.

Every failure becomes a :class:`~spikewatch.errors.ConfigProblem` at a readable field path,
collected into one :class:`~spikewatch.errors.ConfigError`. Messages come from pydantic's
message, never its input, and no check of a field that may hold a credential (secrets,
keys, URLs, headers, files) repeats the value, so a secret never reaches a log.

Overrides: ``SPIKEWATCH_LIMITS__MAX_CONNECTIONS=50`` sets ``limits.max_connections``; a
number indexes a list (``SPIKEWATCH_TARGETS__0__URL``), and the index just past the end
adds an item. Names ignore case. Values are YAML (``[1, 2]``, ``{a: b}``, ``null``),
except for fields that hold text (names, URLs, paths, secrets), which take the value as
written, so that a token like ``0777`` or ``yes`` stays a string. A variable that sets a
whole section (``SPIKEWATCH_LIMITS={max_connections: 10}``) replaces the file's section.
"""

from __future__ import annotations

import copy
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Union

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from spikewatch.config.model import (
    ENV_PREFIX,
    PROBLEMS_ERROR_TYPE,
    JwtConfig,
    ServerConfig,
    SpikewatchConfig,
    TargetConfig,
    is_pem_private_key,
    path_key,
    settings_sources,
)
from spikewatch.errors import ConfigError, ConfigProblem

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "EnvironmentSource",
    "YamlFileSource",
    "load_config",
    "parse_config",
]

#: Names the config file when no path is given.
CONFIG_ENV: Final = "SPIKEWATCH_CONFIG"
# A secret or key file is small; a bound keeps /dev/zero from eating the memory.
_MAX_FILE_BYTES: Final = 1 << 20
# YAML spellings of null, for text fields that may be unset from the environment.
_NULLS: Final = frozenset({"", "~", "null", "Null", "NULL"})
# A real config is about 6 levels deep and holds hundreds of values. Past these bounds a
# document is refused before validation: deeper, pydantic, copy and the YAML dumper hit
# Python's recursion limit; larger (aliases repeat a node without copying it, so a small
# file can stand for billions of values), validation would never end.
MAX_DEPTH: Final = 32
MAX_VALUES: Final = 100_000


def load_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> SpikewatchConfig:
    """Load, override from ``environ`` (default: the process environment) and validate.

    ``path`` falls back to ``SPIKEWATCH_CONFIG``. Relative file names inside the config
    are read relative to the config file's folder. Raise :class:`ConfigError` listing
    every problem found.
    """
    env = os.environ if environ is None else environ
    if path is None or str(path) == "":
        path = env.get(CONFIG_ENV) or None
    if path is None:
        raise ConfigError(
            [ConfigProblem("", f"no config file: pass --config FILE or set {CONFIG_ENV}")]
        )
    source = str(path)
    file_path = Path(path)
    file = YamlFileSource(SpikewatchConfig, lambda: _read_yaml(file_path, source))
    environment = EnvironmentSource(SpikewatchConfig, file, env)
    return _build(
        (environment, file), file, environment.overrides, source, file_path.absolute().parent
    )


def parse_config(
    data: Mapping[str, Any], *, source: str = "", base_dir: str | Path | None = None
) -> SpikewatchConfig:
    """Validate an already-parsed config (no environment overrides) and read its files.

    Relative file names are read relative to ``base_dir`` (default: the working folder).
    Raise :class:`ConfigError` listing every problem found.
    """
    document = YamlFileSource(SpikewatchConfig, lambda: dict(data))
    return _build((document,), document, _Overrides(), source, Path(base_dir or ".").absolute())


# --- the YAML file ---------------------------------------------------------------------


class YamlFileSource(PydanticBaseSettingsSource):
    """The config's document, the YAML file's sections: a settings source.

    ``read`` returns the document: :func:`_read_yaml` for :func:`load_config`, the mapping
    given to :func:`parse_config`. It is read once, when first needed.

    Not pydantic-settings' ``YamlConfigSettingsSource``: that one passes over a missing
    file or a folder as if it were empty, fails with a bare ``ValueError`` on a document
    that is not a mapping, and lets a syntax error through whose text quotes the offending
    line (which may hold a secret). This one raises a :class:`ConfigError` with one
    problem instead (see :func:`_read_yaml`).

    It returns the sections that no source above it set: those come whole from that
    source. For :func:`load_config` that is every section, since the environment source
    returns this document with the variables applied; pydantic-settings' merge would
    otherwise put back the keys of a section that a variable replaced whole.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], read: Callable[[], dict[Any, Any]]
    ) -> None:
        super().__init__(settings_cls)
        self._read = read
        self._document: dict[str, Any] | None = None
        #: Stand-in -> the top-level key it replaces, for keys that are not strings.
        #: pydantic-settings passes its sources' values to the model as keyword arguments,
        #: which must be strings; a stand-in is an unknown field to pydantic, which
        #: :func:`_problems_from` reports as the bad key, in the same place.
        self.stand_ins: dict[str, Any] = {}

    def document(self) -> dict[str, Any]:
        """Return the document, read on the first call, keys not strings replaced."""
        if self._document is None:
            read = self._read()
            self._document = {}
            for key, value in read.items():
                name = key
                if not isinstance(key, str):
                    name = f"\0{len(self.stand_ins)}"
                    while name in read:  # a document can hold anything, even this
                        name += "\0"
                    self.stand_ins[name] = key
                self._document[name] = value
        return self._document

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Return the section ``field_name`` (``__call__`` returns them all at once)."""
        return self.document().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.document().items() if k not in self.current_state}


def _read_yaml(path: Path, source: str) -> dict[Any, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = ConfigProblem("", f"cannot read {path}: {_reason(exc)}")
        raise ConfigError([problem], source) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem("", f"{path} is not UTF-8 text")], source) from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", _yaml_message(exc))], source) from None
    if data is None:  # an empty file: every value from defaults and the environment
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigProblem("", f"must be a mapping of sections, not {_kind(data)}")], source
        )
    return data


class _UnrepresentableYAMLError(yaml.YAMLError):
    """A YAML value that PyYAML parsed but could not build, or nesting past recursion."""


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load``, raising only :class:`yaml.YAMLError`.

    PyYAML's constructors let Python's own errors through: ``ValueError`` for an integer
    of more than 4300 digits or a date like 2001-02-30, ``AttributeError`` for
    ``!!timestamp`` on something that is not one; and its composer recurses once per
    nesting level. Their text is not shown: ``int()`` quotes the digits it could not read.
    """
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise _UnrepresentableYAMLError(f"nested more than {MAX_DEPTH} levels deep") from None
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError):
        raise _UnrepresentableYAMLError(
            "a value cannot be built (a number with too many digits, a date that does not"
            " exist, or a tag on a value it does not fit)"
        ) from None


def _yaml_message(exc: yaml.YAMLError) -> str:
    # Built from the parts, not str(exc): that quotes the offending line, which may hold
    # a secret.
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}{context}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"invalid YAML at character {exc.position + 1}: {exc.reason}"
    if isinstance(exc, _UnrepresentableYAMLError):
        return f"invalid YAML: {exc}"
    return "invalid YAML"


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


# --- environment overrides -------------------------------------------------------------


@dataclass
class _Overrides:
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


class EnvironmentSource(PydanticBaseSettingsSource):
    """``SPIKEWATCH_*`` variables, overlaid on the YAML file's document: a settings source.

    pydantic-settings merges what its sources return mapping by mapping, but a list from
    a higher source replaces the lower one whole. So a source cannot set one item of a
    list by returning it, and pydantic-settings' own ``EnvSettingsSource`` (with
    ``env_nested_delimiter="__"``) reads the ``0`` in ``SPIKEWATCH_TARGETS__0__URL`` as a
    mapping key: the file's targets become ``{"0": {"url": ...}}``. This source instead
    applies each variable to a copy of the file's document, where a number indexes a list
    (the index just past the end adds an item), and returns that merged document, with
    the file's other items and keys in it.

    Prefix and delimiter come from the settings' ``model_config``; names match in any case
    (whatever ``case_sensitive`` says: that is for the init kwargs), and values are parsed
    against the schema (see :func:`_env_value`). What went wrong, and which variable set
    which path (for the "(from VAR)" suffix), is collected in :attr:`overrides`.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], file: YamlFileSource, environ: Mapping[str, str]
    ) -> None:
        super().__init__(settings_cls)
        self._file = file
        self._environ = environ
        self._prefix = self.config.get("env_prefix", "")
        delimiter = self.config.get("env_nested_delimiter")
        assert delimiter, "the environment source needs env_nested_delimiter"
        self._delimiter = delimiter
        self.overrides = _Overrides()
        self._document: dict[str, Any] | None = None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Return the section ``field_name`` (``__call__`` returns them all at once)."""
        return self().get(field_name), field_name, False

    def document(self) -> dict[str, Any]:
        """Return the file's document with the variables applied (applied on the first call)."""
        if self._document is None:  # once: a second run would report its problems again
            # A shallow copy is enough: each variable is applied to a deep copy of its own.
            document = dict(self._file.document())
            self._apply_environment(document)
            self._document = document
        return self._document

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.document().items() if k not in self.current_state}

    def _apply_environment(self, data: dict[str, Any]) -> None:
        """Apply the variables to ``data``, in place."""
        found: list[tuple[list[str], str, str]] = []
        for name, value in self._environ.items():
            if not name.upper().startswith(self._prefix.upper()):
                continue
            segments = name[len(self._prefix) :].lower().split(self._delimiter)
            # Only the config's own sections: SPIKEWATCH_CONFIG and other settings that
            # share the prefix are not overrides.
            if segments[0] not in self.settings_cls.model_fields:
                continue
            if not all(segments):
                self.overrides.problems.append(
                    ConfigProblem("", f"{name}: empty name between '{self._delimiter}'")
                )
                continue
            found.append((segments, name, value))
        # Outer sections first, so that SPIKEWATCH_SERVER={...} does not wipe out a deeper
        # SPIKEWATCH_SERVER__LISTEN; numeric segments in numeric order, so that appends
        # line up.
        found.sort(key=lambda item: (len(item[0]), [_segment_order(s) for s in item[0]]))
        for segments, name, value in found:
            # On a copy: a variable that fails halfway must not leave empty sections
            # behind, which would be reported as problems of their own.
            trial = copy.deepcopy(data)
            if self._apply_one(trial, segments, name, value):
                data.clear()
                data.update(trial)

    def _apply_one(self, data: dict[Any, Any], segments: list[str], name: str, raw: str) -> bool:
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
                    origins[_join(path, path_key(key))] = name
            else:
                key = _dict_key(node, segment)
            annotation = _child_annotation(annotation, key)
            path = _join(path, path_key(key))
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
            self.overrides.problems.append(ConfigProblem(path, f"{name}: {_yaml_message(exc)}"))
            return False
        _put(node, key, value)
        self.overrides.origins.update(origins)
        self.overrides.origins[path] = name
        return True


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


def _child_annotation(annotation: Any, key: str | int) -> Any:
    parent = _strip(annotation)
    if isinstance(parent, type) and issubclass(parent, BaseModel):
        field_info = parent.model_fields.get(str(key))
        return None if field_info is None else field_info.annotation
    origin = typing.get_origin(parent)
    args = typing.get_args(parent)
    if origin in (tuple, list) and args:
        return args[0]
    if origin is dict and args:
        return args[1]
    return None


def _is_sequence(annotation: Any) -> bool:
    return typing.get_origin(_strip(annotation)) in (tuple, list)


def _allows_none(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return type(None) in typing.get_args(annotation)
    return False


def _env_value(raw: str, annotation: Any) -> Any:
    if _strip(annotation) in (str, SecretStr, Path):
        return None if raw in _NULLS and _allows_none(annotation) else raw
    return _load_yaml(raw)


# --- validation ------------------------------------------------------------------------


def _build(
    sources: tuple[YamlFileSource | EnvironmentSource, ...],
    file: YamlFileSource,
    overrides: _Overrides,
    source: str,
    base_dir: Path,
) -> SpikewatchConfig:
    config: SpikewatchConfig | None = None
    validation: list[ConfigProblem] = []
    # The file first: applying the environment copies the document, which a document
    # too deep to validate would break too.
    for checked in (file, *(s for s in sources if s is not file)):
        validation = _shape_problems(checked.document(), file.stand_ins)
        if validation:
            break
    try:
        if not validation:
            with settings_sources(*sources):
                config = SpikewatchConfig()
    except ValidationError as exc:
        validation = _problems_from(exc, file.stand_ins)
    # The environment's own problems first; they are known once the sources have run.
    problems = [*overrides.problems, *validation]
    if config is not None and not problems:
        config, file_problems = _read_files(config, base_dir)
        problems.extend(file_problems)
    if problems:
        raise ConfigError([_with_origin(p, overrides) for p in problems], source)
    assert config is not None  # no problems means validation succeeded
    return config


def _shape_problems(document: dict[str, Any], stand_ins: Mapping[str, Any]) -> list[ConfigProblem]:
    """Return a problem if ``document`` is nested too deeply or holds too many values.

    Nodes that aliases share are measured once; an alias back to a node around it (a
    cycle) counts as one value here, and validation reports it ("refers to itself").
    """
    measures = _measure(document)
    height, size = measures[id(document)]
    if height <= MAX_DEPTH and size <= MAX_VALUES:
        return []
    # Walk down towards the deepest (or the largest) part, to name where it is.
    too_deep = height > MAX_DEPTH
    node: Any = document
    path = ""
    for depth in range(MAX_DEPTH + 1):
        children = [
            (key, child, measures[id(child)])
            for key, child in _children(node)
            if id(child) in measures
        ]
        pick = 0 if too_deep else 1
        limit = MAX_DEPTH - depth - 1 if too_deep else MAX_VALUES
        big = [c for c in children if c[2][pick] > limit]
        if not big or (too_deep and depth == MAX_DEPTH):
            break
        key, node, _ = max(big, key=lambda c: c[2][pick])
        path = _join(path, _shape_key(stand_ins.get(key, key) if depth == 0 else key))
    if too_deep:
        return [ConfigProblem(path, f"nested more than {MAX_DEPTH} levels deep")]
    return [ConfigProblem(path, f"holds more than {MAX_VALUES} values (aliases expanded)")]


def _children(node: Any) -> list[tuple[Any, Any]]:
    if isinstance(node, dict):
        return list(node.items())
    if isinstance(node, list):
        return list(enumerate(node))
    return []


def _shape_key(key: Any) -> str:
    if isinstance(key, str | int) and not isinstance(key, bool):
        return path_key(key)
    return path_key(repr(key))


def _measure(root: Any) -> dict[int, tuple[int, int]]:
    """Return (height, values) of every mapping and list under ``root``, by ``id``.

    Iterative (a deep document must not exhaust the stack) and memoized by identity (a
    node that aliases repeat is measured once); sizes are capped just past the bound.
    """
    measures: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, dict | list) or (id(node) in measures and not children_done):
            continue
        if not children_done:
            if id(node) in open_nodes:  # an alias back to a node around it: a cycle
                continue
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for _, child in _children(node))
            continue
        open_nodes.discard(id(node))
        height, size = 1, 1
        for _, child in _children(node):
            child_height, child_size = measures.get(id(child), (0, 1))
            height = max(height, child_height + 1)
            size = min(size + child_size, MAX_VALUES + 1)
        measures[id(node)] = (height, size)
    return measures


def _with_origin(problem: ConfigProblem, overrides: _Overrides) -> ConfigProblem:
    name = overrides.origin_of(problem.path) if problem.path else None
    if name is None or name in problem.message:
        return problem
    return ConfigProblem(problem.path, f"{problem.message} (from {name})")


def _problems_from(exc: ValidationError, stand_ins: Mapping[str, Any]) -> list[ConfigProblem]:
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
                ConfigProblem(_join(path, relative), message)
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


def _join(base: str, relative: str) -> str:
    if not relative:
        return base
    if not base:
        return relative.removeprefix(".")
    return base + relative if relative.startswith((".", "[")) else f"{base}.{relative}"


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


# --- files named by the config ---------------------------------------------------------


def _read_files(
    config: SpikewatchConfig, base_dir: Path
) -> tuple[SpikewatchConfig, list[ConfigProblem]]:
    """Read the token and keys into the config, and check that the TLS files are readable."""
    problems: list[ConfigProblem] = []
    server = _read_server_files(config.server, base_dir, problems)
    targets = tuple(
        _read_target_files(target, f"targets[{i}]", base_dir, problems)
        for i, target in enumerate(config.targets)
    )
    return config.model_copy(update={"server": server, "targets": targets}), problems


def _read_server_files(
    server: ServerConfig, base_dir: Path, problems: list[ConfigProblem]
) -> ServerConfig:
    if server.api_token_file is None:
        return server
    path = base_dir / server.api_token_file
    text = _read_text(path, "server.api_token_file", problems)
    if text is None:
        return server
    token = text.strip()
    if not token:
        problems.append(ConfigProblem("server.api_token_file", f"{path} is empty"))
        return server
    return server.model_copy(update={"api_token_file": path, "api_token": SecretStr(token)})


def _read_target_files(
    target: TargetConfig, at: str, base_dir: Path, problems: list[ConfigProblem]
) -> TargetConfig:
    update: dict[str, Any] = {}
    tls_paths: dict[str, Path] = {}
    for name, relative in target.tls.files.items():
        path = base_dir / relative
        if _readable(path, f"{at}.tls.{name}", problems):
            tls_paths[name] = path
    if tls_paths:
        update["tls"] = target.tls.model_copy(update=tls_paths)
    if target.auth is not None:
        jwt = _read_jwt_files(target.auth.jwt, f"{at}.auth.jwt", base_dir, problems)
        update["auth"] = target.auth.model_copy(update={"jwt": jwt})
    return target.model_copy(update=update) if update else target


def _read_jwt_files(
    jwt: JwtConfig, at: str, base_dir: Path, problems: list[ConfigProblem]
) -> JwtConfig:
    if jwt.secret_file is not None:
        path = base_dir / jwt.secret_file
        text = _read_text(path, f"{at}.secret_file", problems)
        if text is None:
            return jwt
        # Stripped: a secret file written with `echo` ends with a newline nobody meant.
        secret = text.strip()
        if not secret:
            problems.append(ConfigProblem(f"{at}.secret_file", f"{path} is empty"))
            return jwt
        return jwt.model_copy(update={"secret_file": path, "secret": SecretStr(secret)})
    if jwt.private_key_file is not None:
        path = base_dir / jwt.private_key_file
        text = _read_text(path, f"{at}.private_key_file", problems)
        if text is None:
            return jwt
        if not is_pem_private_key(text):
            problems.append(
                ConfigProblem(f"{at}.private_key_file", f"{path} is not a PEM private key")
            )
            return jwt
        return jwt.model_copy(update={"private_key_file": path, "private_key": SecretStr(text)})
    return jwt


def _read_text(path: Path, at: str, problems: list[ConfigProblem]) -> str | None:
    """Return the file's text, or None after adding a problem; never show its contents."""
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        problems.append(ConfigProblem(at, f"cannot read {path}: {_reason(exc)}"))
        return None
    if len(data) > _MAX_FILE_BYTES:
        problems.append(ConfigProblem(at, f"{path} is larger than {_MAX_FILE_BYTES} bytes"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(ConfigProblem(at, f"{path} is not UTF-8 text"))
        return None


def _readable(path: Path, at: str, problems: list[ConfigProblem]) -> bool:
    """Return whether the file can be read, after adding a problem if not."""
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        problems.append(ConfigProblem(at, f"cannot read {path}: {_reason(exc)}"))
        return False
    return True


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
