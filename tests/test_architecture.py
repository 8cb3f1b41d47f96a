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


def _is_dataset_loader(name: str) -> bool:
    """`load_*dataset*` and `select_per_class`; a command's adapter of its own arguments (`*_from_args`) excepted."""
    if name.endswith("_from_args"):
        return False
    return (name.startswith("load_") and "dataset" in name) or name.startswith("select_per")


# Imports between commands: the shared plumbing, and the T2I recipe built on the C2I one.
_COMMAND_IMPORTS_ALLOWED = {"vapi_trl.commands._common", "vapi_trl.commands.script_help"}
_COMMAND_IMPORT_EXCEPTIONS = {("vapi_trl.commands.train_t2i", "vapi_trl.commands.train_c2i")}


def test_commands_do_not_reuse_each_other_and_datasets_load_in_one_place():
    graph = import_graph()
    sideways = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("vapi_trl.commands.")
        for target in targets
        if target.startswith("vapi_trl.commands.") and target not in _COMMAND_IMPORTS_ALLOWED
    }
    assert sideways - _COMMAND_IMPORT_EXCEPTIONS == set()
    # The dataset loaders live in `vapi_trl.data`; no command defines one for others to import.
    for path in (PACKAGE / "commands").glob("*.py"):
        defined = {
            node.name for node in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(node, ast.FunctionDef)
        }
        assert {name for name in defined if _is_dataset_loader(name)} == set(), path
    # Nor do the examples and scripts take a loader from a command.
    for path in [*(PACKAGE.parent / "examples").glob("*.py"), *(PACKAGE.parent / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vapi_trl.commands"):
                loaders = [alias.name for alias in node.names if _is_dataset_loader(alias.name)]
                assert loaders == [], f"{path.name} imports {loaders} from {node.module}; use vapi_trl.data"
