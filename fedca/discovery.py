"""Components found by name: every module of a package that defines a subclass of a base class
with its own ``name`` contributes it, so adding a component edits no list."""

import importlib
import pkgutil
from types import ModuleType
from typing import Dict


def named_subclasses(package: ModuleType, base: type) -> Dict[str, type]:
    """{name: class} for the subclasses of ``base`` defined in the modules of ``package`` that set
    ``name`` themselves (intermediate bases without a name of their own are left out), sorted by name."""
    found = {}
    for module in pkgutil.iter_modules(package.__path__):
        loaded = importlib.import_module(f"{package.__name__}.{module.name}")
        for value in vars(loaded).values():
            if isinstance(value, type) and issubclass(value, base) and value is not base \
                    and value.__module__ == loaded.__name__ and "name" in vars(value):
                found[value.name] = value
    return dict(sorted(found.items()))
