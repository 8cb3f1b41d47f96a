"""
`--help` of the training scripts (`vapi-trl train-c2i` / `train-t2i`, `examples/train_*.py`) without importing torch,
transformers or TRL: 0.1 s instead of the ~7 s that building their `TrlParser` takes.

`script_help.json` (written by `python scripts/make_cli_help.py`) holds a spec of each script's parser: every
argparse action's option strings, `nargs`, choices, default and raw help text, as the `TrlParser` of the script builds
them, with the recipe defaults and the hidden GRPO options. `static_parser` rebuilds an argparse parser from it, whose
help argparse formats live (terminal width, Python's layout), so it prints what the `TrlParser` prints; the tests check
this (`tests/test_package.py`), and `make_cli_help.py --check` that the spec is up to date. The spec is used only when
the installed TRL and transformers are the versions it was written with, and never with `--config` (whose YAML
changes the defaults shown): otherwise `--help` builds the real `TrlParser`, as before.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


SPEC_FILE = os.path.join(os.path.dirname(__file__), "script_help.json")
# The packages whose dataclasses the parsers are built from (`ScriptArguments`, `GRPOConfig`, `TrainingArguments`).
SPEC_PACKAGES = ("trl", "transformers")
_SUPPRESS = "==SUPPRESS=="  # argparse.SUPPRESS, compared by identity in argparse's formatter: mapped back on load


def installed_versions() -> dict[str, str | None]:
    """The installed versions of `SPEC_PACKAGES` (read from the package metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in SPEC_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def parser_spec(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The JSON-able spec of `parser` from which `static_parser` rebuilds a parser with the same `--help`."""
    default_groups = parser._action_groups[:2]  # "positional arguments", "options"
    if parser._mutually_exclusive_groups or any(
        action.container not in default_groups for action in parser._actions if hasattr(action, "container")
    ):
        raise ValueError("parser_spec supports parsers without argument groups, as TrlParser builds them.")
    actions = []
    for action in parser._actions:
        kind = "help" if isinstance(action, argparse._HelpAction) else "flag" if action.nargs == 0 else "store"
        actions.append(
            {
                "kind": kind,
                "option_strings": list(action.option_strings),
                "dest": action.dest,
                "nargs": action.nargs,
                "default": _SUPPRESS if action.default is argparse.SUPPRESS else str(action.default),
                "choices": None if action.choices is None else [str(choice) for choice in action.choices],
                "required": action.required,
                "help": _SUPPRESS if action.help is argparse.SUPPRESS else action.help,
                "metavar": list(action.metavar) if isinstance(action.metavar, tuple) else action.metavar,
            }
        )
    return {
        "prog": parser.prog,
        "usage": parser.usage,
        "description": parser.description,
        "epilog": parser.epilog,
        "formatter_class": parser.formatter_class.__name__,
        "actions": actions,
    }


def _unsuppress(value: Any) -> Any:
    return argparse.SUPPRESS if value == _SUPPRESS else value


def static_parser(spec: dict[str, Any], prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with the `--help` of the parser `spec` was taken from (for help only: it stores strings)."""
    formatter_class = getattr(argparse, spec["formatter_class"])
    parser = argparse.ArgumentParser(
        prog=prog or spec["prog"],
        usage=spec["usage"],
        description=spec["description"],
        epilog=spec["epilog"],
        formatter_class=formatter_class,
        add_help=False,
    )
    for action in spec["actions"]:
        kwargs = {
            "dest": action["dest"],
            "default": _unsuppress(action["default"]),
            "help": _unsuppress(action["help"]),
        }
        if action["kind"] == "help":
            parser.add_argument(*action["option_strings"], action="help", help=kwargs["help"])
            continue
        if action["kind"] == "flag":
            kwargs["action"] = "store_const"
            kwargs["const"] = None
        else:
            kwargs["nargs"] = action["nargs"]
            kwargs["choices"] = action["choices"]
            kwargs["metavar"] = tuple(action["metavar"]) if isinstance(action["metavar"], list) else action["metavar"]
        if action["option_strings"]:
            kwargs["required"] = action["required"]
        else:
            kwargs.pop("dest")  # a positional's dest is its name
            parser.add_argument(action["dest"], **kwargs)
            continue
        parser.add_argument(*action["option_strings"], **kwargs)
    return parser


def load_spec(name: str) -> dict[str, Any] | None:
    """The spec of script `name` (`train-c2i`, `train_janus.py`, ...), or None when there is none for the installed
    TRL / transformers (then only the real `TrlParser` prints an accurate `--help`)."""
    if not os.path.isfile(SPEC_FILE):
        return None
    with open(SPEC_FILE, encoding="utf-8") as file:
        specs = json.load(file)
    if specs.get("versions") != installed_versions():
        return None
    spec = specs["parsers"].get(name)
    # `make_cli_help.py` stores each action shared by several scripts once: `actions` are indices into that table.
    return None if spec is None else {**spec, "actions": [specs["actions"][i] for i in spec["actions"]]}


def help_requested(argv: list[str]) -> bool:
    """Whether `argv` asks for `-h`/`--help` (before any `--`), without `--config` (a YAML changes the defaults)."""
    tokens = argv[: argv.index("--")] if "--" in argv else argv
    wants_help = any(token in ("-h", "--help") for token in tokens)
    return wants_help and not any(token == "--config" or token.startswith("--config=") for token in tokens)


def exit_if_help_requested(name: str, argv: list[str] | None = None, prog: str | None = None) -> None:
    """
    With `-h`/`--help` in `argv` (default `sys.argv[1:]`), print the `--help` of script `name` from its committed spec
    and exit 0; return otherwise, or when no up-to-date spec applies (the caller's `TrlParser` then prints it).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not help_requested(argv):
        return
    spec = load_spec(name)
    if spec is None:
        return
    static_parser(spec, prog=prog).print_help()
    raise SystemExit(0)


__all__ = ["exit_if_help_requested", "help_requested", "load_spec", "parser_spec", "static_parser"]
