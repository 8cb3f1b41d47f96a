"""`vapi-trl` command line: one subcommand per module in `vapi_trl.commands`.

Each command module defines `make_parser(subparsers)` (adds its subparser, returns it) and `main(args)`. Only the
module of the command being run is imported (the others get a placeholder subparser with their one-line help), and
the package root imports nothing heavy, so `vapi-trl --help` starts without torch, transformers or TRL.

The training commands (`SCRIPT_COMMANDS`) are TRL-style scripts, run as `trl <command>` runs them: the arguments after
the command name go, untouched, to the script's `main(argv)` and its own `TrlParser` (with `--config recipe.yaml`), in
this process, so `accelerate launch -m vapi_trl.cli train-c2i ...` and `accelerate launch
examples/train_llamagen_c2i.py ...` run the same code. Their `--help` is printed from the committed parser spec
(`vapi_trl.commands.script_help`) without importing TRL.

A user error (`ValueError`, `TypeError`, `OSError`: a bad value, a missing or corrupt file, a full disk) prints one
line, `vapi-trl <command>: error: <message>`, and exits with 2, as argparse does for bad arguments; `vapi-trl --debug
<command> ...` or `VAPI_TRL_DEBUG=1` shows the traceback instead.
"""

import argparse
import importlib
import os
import sys


# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "env": ("vapi_trl.commands.env", "Print versions and devices, for bug reports."),
    "demo": ("vapi_trl.commands.demo", "Run VA-π end to end on the embedded Fashion-MNIST default (CPU, minutes)."),
    "convert-llamagen": (
        "vapi_trl.commands.convert_llamagen",
        "Convert official LlamaGen C2I/T2I GPT and VQ-16 .pt checkpoints to HF folders.",
    ),
    "convert-var": ("vapi_trl.commands.convert_var", "Convert official VAR VQ-VAE and var_d*.pth files to HF."),
    "train-c2i": ("vapi_trl.commands.train_c2i", "VA-π post-training of a LlamaGen class-to-image policy."),
    "tokenize": ("vapi_trl.commands.tokenize", "Pre-extract VQ tokens (gt_ids) of a class-to-image dataset."),
    "sample": ("vapi_trl.commands.sample", "Class-to-image samples for FID: PNGs, ADM .npz and a run record."),
    "fid": ("vapi_trl.commands.fid", "FID / IS / precision-recall of samples against a reference batch."),
    "train-t2i": ("vapi_trl.commands.train_t2i", "VA-π post-training of a LlamaGen text-to-image policy."),
    "encode-captions": (
        "vapi_trl.commands.encode_captions",
        "Pre-compute the T5 caption features (caption_embeds) of an image-caption dataset.",
    ),
    "sample-geneval": (
        "vapi_trl.commands.sample_geneval",
        "GenEval samples (<output_dir>/<00000>/metadata.jsonl + samples/*.png) for LlamaGen-T2I or Janus-Pro.",
    ),
}


# Commands whose module is a TRL-style training script: `main(argv)` parses the arguments after the command name.
SCRIPT_COMMANDS = ("train-c2i", "train-t2i")

DEBUG_ENVIRONMENT_VARIABLE = "VAPI_TRL_DEBUG"
# Errors that come from what the user gave (values, files, disk) rather than from a bug: shown as one line.
USER_ERRORS = (ValueError, TypeError, OSError)


def _requested_command(argv: list[str] | None) -> str | None:
    """The first argument that names a command (the root parser has no option taking a value), or None."""
    for token in argv or ():
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def _describe_corrupt_weights(error: Exception, args: argparse.Namespace, script_argv: list[str] | None) -> str:
    """The message for a `SafetensorError`: the broken `.safetensors` files under the command's path arguments."""
    from safetensors import safe_open

    values = [value for value in vars(args).values() if isinstance(value, str)]
    values += list(script_argv or ())
    files = []
    for value in values:
        if os.path.isfile(value) and value.endswith(".safetensors"):
            files.append(value)
        elif os.path.isdir(value):
            for root, _, names in os.walk(value):
                files += [os.path.join(root, name) for name in sorted(names) if name.endswith(".safetensors")]
    broken = []
    for file in files:
        try:
            with safe_open(file, framework="pt"):
                pass
        except Exception:  # noqa: BLE001 - any failure to open marks the file as the culprit
            broken.append(file)
    where = ", ".join(repr(file) for file in broken) if broken else "a .safetensors weights file"
    return f"{where} is truncated or corrupt ({error}); copy, download or convert it again."


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """
    The `vapi-trl` parser with one subparser per entry of `COMMANDS`. With `argv`, only the command it names gets its
    full parser (its module is imported); the others are placeholders that show their one-line help.
    """
    parser = argparse.ArgumentParser(
        prog="vapi-trl", description="VA-π post-training of autoregressive image generators."
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"Show the full traceback of an error instead of one line (also: {DEBUG_ENVIRONMENT_VARIABLE}=1).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _requested_command(argv) if argv is not None else None
    for name, (module, help_text) in COMMANDS.items():
        if name in SCRIPT_COMMANDS:
            # As `trl <command>`: a bare subparser; the script's own TrlParser reads what follows the command name.
            subparsers.add_parser(name, help=help_text, add_help=False)
        elif argv is None or name == wanted:
            importlib.import_module(module).make_parser(subparsers, name=name, help=help_text)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `vapi-trl` on `argv` (default: `sys.argv[1:]`); returns the exit code (2 for a user error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    script_argv = None
    if _requested_command(argv) in SCRIPT_COMMANDS:
        position = argv.index(_requested_command(argv)) + 1
        argv, script_argv = argv[:position], argv[position:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "").lower() in ("1", "true", "yes")
    if script_argv is not None:
        from vapi_trl.commands.script_help import exit_if_help_requested

        exit_if_help_requested(args.command, script_argv)  # from the committed spec: no TRL import for --help
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return (module.main(args) if script_argv is None else module.main(script_argv)) or 0
    except USER_ERRORS as error:
        if debug:
            raise
        message = str(error) or type(error).__name__
        if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in message:
            message = f"{message} ({error.filename})"
        print(f"vapi-trl {args.command}: error: {message}", file=sys.stderr)
        return 2
    except Exception as error:
        # safetensors raises its own exception type, without the file name, for a truncated or corrupt file.
        if debug or type(error).__name__ != "SafetensorError":
            raise
        message = _describe_corrupt_weights(error, args, script_argv)
        print(f"vapi-trl {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"vapi-trl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["COMMANDS", "SCRIPT_COMMANDS", "USER_ERRORS", "build_parser", "main"]
