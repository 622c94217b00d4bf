"""Every error of the package derives from SpikewatchError and is drawn in errors.py."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import spikewatch
from spikewatch import errors
from spikewatch.errors import SpikewatchError

#: Outside the tree on purpose (errors.py says why): a BaseException for an early SIGTERM.
OUTSIDE = {"spikewatch._entry.Terminated"}


def package_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a spikewatch module, by its qualified name."""
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(spikewatch.__path__, "spikewatch."):
        if module_info.name.endswith("__main__"):
            continue  # running it is what importing it does
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")  # private: never leaves its module
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_error_is_under_the_one_root_and_in_the_drawn_tree() -> None:
    """Each public exception class derives from SpikewatchError and is drawn in the tree."""
    found = package_exceptions()
    assert "spikewatch.daemon.api.ApiError" in found, "the walk reaches every module"
    outside = {name for name, cls in found.items() if not issubclass(cls, SpikewatchError)}
    assert outside == OUTSIDE
    doc = errors.__doc__ or ""
    drawn = set(re.findall(r"^ +(?:[│ ]   )*(?:[├└]── )?(\w+Error)(?: |$)", doc, re.MULTILINE))
    under_root = {cls.__name__ for name, cls in found.items() if name not in OUTSIDE}
    assert drawn == under_root
    assert all(f"``{name.rsplit('.', 1)[1]}``" in doc for name in OUTSIDE)
