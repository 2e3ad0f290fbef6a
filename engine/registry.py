"""Node type registry: name -> node class, injected wherever it is needed (no global state).

`default_registry()` discovers the built-in `nodes` package. User node packs are code, so they load
only from folders the caller names explicitly (config or `--node-pack`). Old type names listed in a
spec's `legacy_names` resolve to the current class so renamed nodes keep loading.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable

from engine.schema import NodeSpec, NodeType


class RegistryError(Exception):
    """A node type or node pack that cannot be registered."""


class NodeRegistry:
    def __init__(self) -> None:
        self._types: dict[str, type[NodeType]] = {}
        self._legacy: dict[str, str] = {}
        self.pack_errors: list[str] = []

    def register(self, node_cls: type[NodeType]) -> type[NodeType]:
        spec = getattr(node_cls, "spec", None)
        if not isinstance(spec, NodeSpec):
            raise RegistryError(f"{node_cls.__name__} has no NodeSpec 'spec' attribute")
        existing = self._types.get(spec.name)
        if existing is not None and existing is not node_cls:
            raise RegistryError(f"node type {spec.name!r} is registered twice "
                                f"({existing.__module__} and {node_cls.__module__})")
        self._types[spec.name] = node_cls
        for old in spec.legacy_names:
            self._legacy[old] = spec.name
        return node_cls

    def register_module(self, module: ModuleType) -> int:
        """Register every NodeType subclass defined in `module` (or listed in its NODE_TYPES)."""
        listed = getattr(module, "NODE_TYPES", None)
        if listed is not None:
            classes: Iterable[type] = listed
        else:
            classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                       if obj.__module__ == module.__name__]
        count = 0
        for cls in classes:
            if issubclass(cls, NodeType) and isinstance(getattr(cls, "spec", None), NodeSpec):
                self.register(cls)
                count += 1
        return count

    def discover_package(self, package_name: str = "nodes") -> int:
        """Import every module of a package and register its node types."""
        package = importlib.import_module(package_name)
        count = self.register_module(package)
        for info in pkgutil.iter_modules(package.__path__, prefix=f"{package_name}."):
            try:
                count += self.register_module(importlib.import_module(info.name))
            except Exception as exc:  # one broken module must not hide every other node
                self.pack_errors.append(f"{info.name}: {type(exc).__name__}: {exc}")
        return count

    def load_node_pack(self, folder: str | Path) -> int:
        """Load user node modules from a folder the user named. Errors are kept, not raised."""
        folder = Path(folder)
        count = 0
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module_name = f"reelgraph_pack_{abs(hash(str(folder)))}_{path.stem}"
            try:
                spec = importlib.util.spec_from_file_location(module_name, path)
                assert spec and spec.loader
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
                count += self.register_module(module)
            except Exception as exc:  # a broken pack must not take the app down
                self.pack_errors.append(f"{path}: {type(exc).__name__}: {exc}")
        return count

    def resolve_name(self, name: str) -> str | None:
        if name in self._types:
            return name
        return self._legacy.get(name)

    def get(self, name: str) -> type[NodeType] | None:
        resolved = self.resolve_name(name)
        return self._types.get(resolved) if resolved else None

    def spec(self, name: str) -> NodeSpec | None:
        cls = self.get(name)
        return cls.spec if cls else None

    def names(self) -> list[str]:
        return sorted(self._types)

    def specs(self) -> list[NodeSpec]:
        return [self._types[n].spec for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return self.resolve_name(name) is not None

    def catalogue(self) -> list[dict]:
        return [s.to_json() for s in self.specs()]


def default_registry(node_packs: Iterable[str | Path] = ()) -> NodeRegistry:
    """Registry with the built-in nodes plus the named user node-pack folders."""
    registry = NodeRegistry()
    registry.discover_package("nodes")
    for folder in node_packs:
        registry.load_node_pack(folder)
    return registry
