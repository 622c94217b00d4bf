"""The YAML file: pydantic-settings' YAML source, read behind guards.

:class:`YamlFileSource` is pydantic-settings' ``YamlConfigSettingsSource`` with its reading
replaced by :func:`read_yaml_file`; :func:`shape_problems` refuses a document too deep or
too large to validate.

Hand-written, because the library's reading is ``yaml.safe_load(file) or {}`` on every
file that exists: it passes over a missing file or a folder as if it were empty, fails
with a bare ``ValueError`` on a document that is not a mapping, lets PyYAML's own errors
through (whose text quotes the offending line, which may hold a secret, and which include
Python's ``ValueError`` for a 4301-digit integer), and has no bound on nesting or on what
aliases expand to. Each of these becomes one :class:`~spikewatch.errors.ConfigProblem`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, YamlConfigSettingsSource

from spikewatch.config.problems import join_path, os_error_reason, path_key
from spikewatch.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from pydantic_settings.sources.types import ConfigFileSourceType, Traversable

__all__ = [
    "MAX_DEPTH",
    "MAX_VALUES",
    "YamlFileSource",
    "load_yaml",
    "read_yaml_file",
    "shape_problems",
    "yaml_message",
]

# A real config is about 6 levels deep and holds hundreds of values. Past these bounds a
# document is refused before validation: deeper, pydantic, copy and the YAML dumper hit
# Python's recursion limit; larger (aliases repeat a node without copying it, so a small
# file can stand for billions of values), validation would never end.
MAX_DEPTH: Final = 32
MAX_VALUES: Final = 100_000


class YamlFileSource(YamlConfigSettingsSource):
    """The config's document, the YAML file's sections: a pydantic-settings source.

    The document is the file at ``yaml_file`` (read by :func:`read_yaml_file`, for
    :func:`~spikewatch.config.load_config`) or ``document`` as given (for
    :func:`~spikewatch.config.parse_config`). The library does the rest: it is the YAML
    source, and its ``InitSettingsSource`` base matches the sections to fields.

    It returns the sections that no source above it set: those come whole from that
    source. For :func:`~spikewatch.config.load_config` that is every section, since the
    environment source returns this document with the variables applied;
    pydantic-settings' merge would otherwise put back the keys of a section that a
    variable replaced whole.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        yaml_file: Path | None = None,
        *,
        document: Mapping[Any, Any] | None = None,
        source: str = "",
    ) -> None:
        self._path = yaml_file
        self._given = document
        self._source = source
        #: Stand-in -> the top-level key it replaces, for keys that are not strings.
        #: pydantic-settings passes its sources' values to the model as keyword arguments,
        #: which must be strings; a stand-in is an unknown field to pydantic, which
        #: :func:`~spikewatch.config.problems.problems_from` reports as the bad key, in
        #: the same place.
        self.stand_ins: dict[str, Any] = {}
        super().__init__(settings_cls, yaml_file=yaml_file)

    def _read_files(
        self, files: ConfigFileSourceType | None, deep_merge: bool = False
    ) -> dict[str, Any]:
        # One file, read even when it is missing or a folder (the library skips those).
        if self._given is not None:
            return self._with_stand_ins(self._given)
        assert self._path is not None, "YamlFileSource needs yaml_file or document"
        return self._read_file(self._path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        return self._with_stand_ins(read_yaml_file(Path(str(file_path)), self._source))

    def _with_stand_ins(self, read: Mapping[Any, Any]) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for key, value in read.items():
            name = key
            if not isinstance(key, str):
                name = f"\0{len(self.stand_ins)}"
                while name in read:  # a document can hold anything, even this
                    name += "\0"
                self.stand_ins[name] = key
            document[name] = value
        return document

    def document(self) -> dict[str, Any]:
        """Return the document, as read, keys that are not strings replaced."""
        return self.yaml_data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Return the section ``field_name`` (``__call__`` returns them all at once)."""
        return self.yaml_data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in super().__call__().items() if k not in self.current_state}


def read_yaml_file(path: Path, source: str) -> dict[Any, Any]:
    """Return the file's document; raise :class:`ConfigError` with one problem if there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = ConfigProblem("", f"cannot read {path}: {os_error_reason(exc)}")
        raise ConfigError([problem], source) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem("", f"{path} is not UTF-8 text")], source) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", yaml_message(exc))], source) from None
    if data is None:  # an empty file: every value from defaults and the environment
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigProblem("", f"must be a mapping of sections, not {_kind(data)}")], source
        )
    return data


class _UnrepresentableYAMLError(yaml.YAMLError):
    """A YAML value that PyYAML parsed but could not build, or nesting past recursion."""


def load_yaml(text: str) -> Any:
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


def yaml_message(exc: yaml.YAMLError) -> str:
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


def shape_problems(document: dict[str, Any], stand_ins: Mapping[str, Any]) -> list[ConfigProblem]:
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
        path = join_path(path, _shape_key(stand_ins.get(key, key) if depth == 0 else key))
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
