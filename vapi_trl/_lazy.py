"""PEP 562 lazy attributes for packages whose public names must not import torch, transformers or TRL up front."""

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(
    package: str, attributes: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """
    The module-level `__getattr__` and `__dir__` of `package`, as transformers does: each public name in `attributes`
    (name -> defining module) is imported on first access and then cached in the package `namespace` (its `globals()`).
    """

    def __getattr__(name: str) -> Any:
        if name in attributes:
            value = getattr(importlib.import_module(attributes[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*namespace, *attributes])

    return __getattr__, __dir__
