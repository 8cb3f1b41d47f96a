"""
Steps shared by the subcommands: for the VA-π training scripts (`train-c2i`, `train-t2i`, `examples/train_var_c2i.py`,
`examples/train_janus.py`) the policy dtype from `--dtype` and the "build `VAPiTrainer`, train, save, model card, push"
tail; for the checkpoint converters (`convert-llamagen`, `convert-var`) the `--dtype` / `--no-verify` options and the
report of the written folders.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def make_train_parser(
    subparsers,
    name: str,
    help: str,
    prog: str | None,
    script_arguments: type,
    defaults: dict[str, Any],
):
    """
    The `TrlParser((script_arguments, VAPiConfig, ModelConfig))` of a training script, with `defaults` (and
    `lora_task_type=None`). With `subparsers` (the `vapi-trl` CLI), registers instead a pass-through subcommand `name`
    whose arguments are parsed by that `TrlParser` in `run_train_command`.
    """
    if subparsers is not None:
        # The CLI root is a plain argparse parser; `prefix_chars` that never occur make every token a positional, so
        # the TrlParser (with `--help` and `--config recipe.yaml`) sees the arguments untouched.
        parser = subparsers.add_parser(name, help=help, add_help=False, prefix_chars="\x00")
        parser.add_argument("train_args", nargs="*")
        return parser
    from trl import ModelConfig, TrlParser

    from vapi_trl.config import VAPiConfig

    parser = TrlParser((script_arguments, VAPiConfig, ModelConfig), prog=prog)
    parser.set_defaults(
        lora_task_type=None,  # a plain PeftModel forwards the policy's own kwargs (no CAUSAL_LM generation wrapper)
        **defaults,
    )
    return parser


def run_train_command(args: argparse.Namespace | list[str] | None, parser, train: Callable) -> int:
    """
    Parse `args` (the CLI namespace of a pass-through subcommand, an argument list, or `None` for `sys.argv[1:]`) with
    the `TrlParser` `parser` and call `train(script_args, training_args, model_args)`; returns the exit code 0.
    """
    if isinstance(args, argparse.Namespace):
        argv = list(args.train_args)
    else:
        argv = sys.argv[1:] if args is None else list(args)
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    train(script_args, training_args, model_args)
    return 0


def policy_dtype(model_args: Any):
    """
    The `dtype` to load the policy with: `--dtype` as a `torch.dtype` (`"auto"` and `None` as is). fp32 master weights
    by default (bf16 weights cannot hold lr-1e-6 updates); autocast comes from `--bf16`.
    """
    import torch

    return model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)


def run_training(
    model: Any,
    image_tokenizer: Any,
    dataset: Any,
    training_args: Any,
    peft_config: Any = None,
    processing_class: Any = None,
    dataset_name: str | None = None,
    after_train: Callable[[Any], None] | None = None,
):
    """
    Build a `VAPiTrainer`, train, call `after_train(trainer)` if given, save the policy to `output_dir`, write the model
    card and push to the Hub with `--push_to_hub`; returns the trainer.
    """
    from vapi_trl import VAPiTrainer

    trainer = VAPiTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        image_tokenizer=image_tokenizer,
        processing_class=processing_class,
        peft_config=peft_config,
    )
    trainer.train()
    if after_train is not None:
        after_train(trainer)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
    return trainer


def add_conversion_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the converters' `--dtype` (of the saved policy weights) and `--no-verify` options to `parser`."""
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16", "keep"],
        default="float32",
        help="dtype of the saved policy weights (default float32; 'keep' keeps the checkpoint's). The VQ stays fp32.",
    )
    parser.add_argument(
        "--no-verify",
        "--no_verify",
        dest="verify",
        action="store_false",
        help="Skip reloading the written folders to compare every tensor.",
    )


def saved_dtype(name: str):
    """The converters' `--dtype` as a `torch.dtype`; `None` for `"keep"` (the checkpoint's own dtype)."""
    import torch

    return None if name == "keep" else getattr(torch, name)


def print_written(written: dict[str, str]) -> int:
    """Print the `kind: path` of each folder a converter wrote; returns the exit code 0."""
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
