"""The import graph of `vapi_trl` is one-way: no cycles, and nothing below the CLI imports `vapi_trl/commands/`."""

import ast
import pathlib

import vapi_trl


PACKAGE = pathlib.Path(vapi_trl.__file__).parent


def module_name(path: pathlib.Path) -> str:
    parts = ["vapi_trl", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the `vapi_trl` modules it imports, at module level or inside functions."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets |= {
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in paths else module for alias in node.names
                }
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {target for target in targets if target in paths and target != name}
    return graph


def test_nothing_below_the_cli_imports_commands():
    upward = {
        name: sorted(
            target for target in targets if target.startswith("vapi_trl.commands") or target == "vapi_trl.cli"
        )
        for name, targets in import_graph().items()
        if not name.startswith("vapi_trl.commands") and name != "vapi_trl.cli"
    }
    assert {name: targets for name, targets in upward.items() if targets} == {}


def test_import_graph_has_no_cycles():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                raise AssertionError(f"import cycle: {' -> '.join([*path[path.index(target) :], target])}")
            if target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
