"""README's "What spikewatch promises": every promise cites tests, and every cited test exists."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## What spikewatch promises"

#: A citation: ``tests/path.py::test_name`` or ``tests/path.py::test_name[param-id]``.
CITATION = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(\[[^\]`]+\])?`")


@dataclass(frozen=True)
class Promise:
    """One bullet of the section: its bold lead and the tests it cites."""

    title: str
    citations: tuple[tuple[str, str, str | None], ...]


def section(text: str) -> str:
    """Return the promises section of ``text``, without its heading, up to the next one."""
    start = text.index(SECTION + "\n") + len(SECTION) + 1
    following = text.find("\n## ", start)
    return text[start:] if following < 0 else text[start : following + 1]


def promises(text: str) -> list[Promise]:
    """Return the section's promises: top-level bullets that begin with a bold lead."""
    found = []
    for bullet in re.split(r"\n(?=- )", "\n" + section(text))[1:]:
        title = re.match(r"- \*\*(.+?)\*\*", bullet.strip())
        assert title is not None, f"a promise starts with a bold lead: {bullet[:60]!r}"
        cited = tuple((m[1], m[2], m[3][1:-1] if m[3] else None) for m in CITATION.finditer(bullet))
        found.append(Promise(title.group(1), cited))
    return found


def _is_parametrized(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("parametrize" in ast.unparse(decorator) for decorator in function.decorator_list)


def citation_problem(path: str, name: str, param: str | None, root: Path = ROOT) -> str | None:
    """Return why ``path::name[param]`` names no collected test, or None when it does."""
    file = root / path
    if not file.is_file():
        return f"{path}: no such file"
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    # Module-level test functions only: that is how the suite is written.
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    function = functions.get(name)
    if function is None or not name.startswith("test"):
        return f"{path}::{name}: no such test function"
    if param is not None and not _is_parametrized(function):
        return f"{path}::{name}[{param}]: the test is not parametrized"
    return None


def problems_of(text: str, root: Path = ROOT) -> list[str]:
    """Return every broken promise: no citation, or a citation of no test."""
    found = []
    for promise in promises(text):
        if not promise.citations:
            found.append(f"{promise.title!r} cites no test")
        for path, name, param in promise.citations:
            problem = citation_problem(path, name, param, root)
            if problem is not None:
                found.append(f"{promise.title!r}: {problem}")
    return found


def test_every_promise_cites_tests_that_exist() -> None:
    """Each promise in README.md cites at least one test, and each cited test is defined."""
    text = README.read_text(encoding="utf-8")
    listed = promises(text)
    assert len(listed) >= 10
    assert problems_of(text) == []


def test_every_citation_in_the_section_is_read() -> None:
    """No `tests/...::...` reference in the section escapes the citation pattern (and check)."""
    body = section(README.read_text(encoding="utf-8"))
    mentioned = re.findall(r"`tests/[^`]*::[^`]*`", body)
    cited = [m.group(0) for m in CITATION.finditer(body)]
    assert mentioned == cited


def test_the_check_catches_missing_tests_and_promises_without_any(tmp_path: Path) -> None:
    """A citation of a missing file, function or parametrization, or none at all, is reported."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text(
        "import pytest\n\n"
        "def test_plain():\n    pass\n\n"
        "@pytest.mark.parametrize('x', [1])\n"
        "async def test_many(x):\n    pass\n\n"
        "def helper():\n    pass\n",
        encoding="utf-8",
    )
    text = (
        f"# x\n\n{SECTION}\n\nIntro.\n\n"
        "- **Good.** Tests: `tests/test_a.py::test_plain`, `tests/test_a.py::test_many[1]`.\n"
        "- **No file.** Tests: `tests/test_b.py::test_plain`.\n"
        "- **No function.** Tests: `tests/test_a.py::test_gone`, `tests/test_a.py::helper`.\n"
        "- **Not parametrized.** Tests: `tests/test_a.py::test_plain[1]`.\n"
        "- **Nothing cited.**\n  Trust me.\n\n"
        "## Next\n\n- **Not a promise.**\n"
    )
    assert [p.title for p in promises(text)] == [
        "Good.",
        "No file.",
        "No function.",
        "Not parametrized.",
        "Nothing cited.",
    ]
    assert problems_of(text, tmp_path) == [
        "'No file.': tests/test_b.py: no such file",
        "'No function.': tests/test_a.py::test_gone: no such test function",
        "'No function.': tests/test_a.py::helper: no such test function",
        "'Not parametrized.': tests/test_a.py::test_plain[1]: the test is not parametrized",
        "'Nothing cited.' cites no test",
    ]
