"""`vapi-trl` command line: one subcommand per module in `vapi_trl.commands`.

Each command module defines `make_parser(subparsers)` (adds its subparser, returns it) and `main(args)`. Modules are
imported lazily so that `vapi-trl --help` stays fast and a command's heavy imports only load when it runs.
"""

import argparse
import importlib
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
        "GenEval samples (<out>/<00000>/metadata.jsonl + samples/*.png) for LlamaGen-T2I or Janus-Pro.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The `vapi-trl` parser with one subparser per entry of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="vapi-trl", description="VA-π post-training of autoregressive image generators."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        importlib.import_module(module).make_parser(subparsers, name=name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `vapi-trl` on `argv` (default: `sys.argv[1:]`); returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.main(args) or 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["COMMANDS", "build_parser", "main"]
