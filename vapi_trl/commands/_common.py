"""
Steps shared by the subcommands: for the VA-π training scripts (`train-c2i`, `train-t2i`, `examples/train_var_c2i.py`,
`examples/train_janus.py`) the policy dtype from `--dtype` and the "build `VAPiTrainer`, train, save, model card, push"
tail; for the checkpoint converters (`convert-llamagen`, `convert-var`) the `--dtype` / `--no_verify` options and the
report of the written folders.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any


# GRPOConfig options that `VAPiConfig` rejects (free-running text generation, GRPO's KL `beta`): hidden from the
# training commands' `--help`, still parsed so that `VAPiConfig` can name the VA-π option to use instead.
_REJECTED_GRPO_OPTIONS = (
    "use_vllm", "use_transformers_paged", "use_transformers_continuous_batching", "chat_template_kwargs", "beta",
    "min_p", "repetition_penalty", "delta",
)  # fmt: skip
_RESUME_LAST = ("true", "last")


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
    `lora_task_type=None`). With `subparsers`, registers instead the bare subcommand `name` (as `trl <command>`
    does; `vapi-trl` then hands the arguments after the command name to the script's `main(argv)`).
    """
    if subparsers is not None:
        return subparsers.add_parser(name, help=help, add_help=False)
    from trl import ModelConfig, TrlParser

    from vapi_trl.config import VAPiConfig

    parser = TrlParser((script_arguments, VAPiConfig, ModelConfig), prog=prog)
    parser.set_defaults(
        lora_task_type=None,  # a plain PeftModel forwards the policy's own kwargs (no CAUSAL_LM generation wrapper)
        **defaults,
    )
    for action in parser._actions:
        if action.dest in _REJECTED_GRPO_OPTIONS or action.dest.startswith("vllm_"):
            action.help = argparse.SUPPRESS
    return parser


def add_output_dir_arguments(parser) -> None:
    """Add `--overwrite_output_dir` (a fresh run in an `output_dir` that holds files) to a training `TrlParser`."""
    add_argument(
        parser,
        "--overwrite_output_dir",
        action="store_true",
        help="Start a fresh run in an --output_dir that already holds files (checkpoints, a saved policy); without "
        "it such a run stops, so an earlier run is never overwritten. To continue it, pass --resume_from_checkpoint "
        "last instead.",
    )


def parse_train_args(parser, argv: list[str] | None = None) -> tuple[Any, Any, Any]:
    """
    `parser.parse_args_and_config(argv)` with `--overwrite_output_dir` (see `add_output_dir_arguments`), which is kept
    on the training arguments as `overwrite_output_dir`; returns `(script_args, training_args, model_args)`.
    """
    add_output_dir_arguments(parser)
    script_args, training_args, model_args, extra = parser.parse_args_and_config(argv)
    training_args.overwrite_output_dir = extra.overwrite_output_dir
    # Decided here, before the model loads, at the same point on every process: later, rank 0 may already be writing
    # logs into output_dir while another rank still loads, and a second check there would stop that rank alone.
    resolve_resume_checkpoint(training_args)
    training_args.output_dir_checked = True
    return script_args, training_args, model_args


def resolve_resume_checkpoint(training_args: Any) -> str | None:
    """
    The checkpoint a training command resumes from, after checking that a fresh run loses nothing.

    `training_args.resume_from_checkpoint`: `true`/`last` (any case) -> the last complete `checkpoint-N` of
    `output_dir` (`vapi_trl.checkpoints.last_complete_checkpoint`); a path -> that checkpoint folder. Unset: a fresh
    run, refused with a `ValueError` when `output_dir` already holds files, unless
    `training_args.overwrite_output_dir`.
    The resolved path is stored back in `training_args.resume_from_checkpoint`.
    """
    from vapi_trl.checkpoints import is_complete_checkpoint, last_complete_checkpoint

    output_dir = training_args.output_dir
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("false", "none", ""):
        resume = None
    if resume is True or (isinstance(resume, str) and resume.lower() in _RESUME_LAST):
        resume = last_complete_checkpoint(output_dir)
        if resume is None:
            raise ValueError(
                f"--resume_from_checkpoint last: {output_dir!r} holds no complete checkpoint-N folder. Start a fresh "
                "run without --resume_from_checkpoint, or pass the checkpoint folder to resume from."
            )
    elif resume is not None:
        if not is_complete_checkpoint(resume):
            raise ValueError(
                f"--resume_from_checkpoint {resume!r} is not a complete checkpoint folder (it needs the "
                "trainer_state.json that Trainer writes last). Pass a checkpoint-N folder, or `last` for the last "
                "complete one of --output_dir."
            )
    elif (
        os.path.isdir(output_dir)
        and os.listdir(output_dir)
        and not getattr(training_args, "overwrite_output_dir", False)
    ):
        entries = sorted(os.listdir(output_dir))
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(
            f"--output_dir {output_dir!r} already holds files of an earlier run ({shown}); a fresh run would "
            "overwrite them. Pass --resume_from_checkpoint last to continue that run, or --overwrite_output_dir to "
            "start over in it (or pick another --output_dir)."
        )
    training_args.resume_from_checkpoint = resume
    return resume


def run_train_command(args: list[str] | None, parser, train: Callable) -> int:
    """
    Parse `args` (an argument list, or `None` for `sys.argv[1:]`) with the `TrlParser` `parser` and call
    `train(script_args, training_args, model_args)`; returns the exit code 0.
    """
    argv = sys.argv[1:] if args is None else list(args)
    script_args, training_args, model_args = parse_train_args(parser, argv)
    with quiet_weight_bars():
        train(script_args, training_args, model_args)
    return 0


def train_command_main(name: str, make_parser: Callable, train: Callable) -> Callable[[list[str] | None], int]:
    """
    The `main(args=None) -> int` of the training subcommand `name` (and of its example script): parses the arguments
    after `vapi-trl <name>` (`None`: `sys.argv[1:]`) with `make_parser(prog="vapi-trl <name>")` and calls `train`
    (`run_train_command`).
    """

    def main(args: list[str] | None = None) -> int:
        return run_train_command(args, make_parser(prog=f"vapi-trl {name}"), train)

    main.__doc__ = (
        f"Entry point of `vapi-trl {name}` and of its example script: the arguments after `{name}`, or `None` for "
        "`sys.argv[1:]`; returns the exit code."
    )
    return main


# transformers' per-load/save bars, which interleave with the training logs and say nothing about progress.
_QUIET_BARS = ("Loading weights", "Writing model shards")


class quiet_weight_bars:
    """Within the block, transformers' "Loading weights" / "Writing model shards" bars are disabled (Hub downloads
    keep theirs), through `transformers.utils.logging.set_tqdm_hook`."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        def hook(factory, args, kwargs):
            if kwargs.get("desc") in _QUIET_BARS:
                kwargs = {**kwargs, "disable": True}
            return self.previous(factory, args, kwargs) if self.previous is not None else factory(*args, **kwargs)

        self.previous = hf_logging.set_tqdm_hook(hook)
        return self

    def __exit__(self, *exc_info) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_tqdm_hook(self.previous)


def policy_dtype(model_args: Any):
    """
    The `dtype` to load the policy with: `--dtype` as a `torch.dtype` (`"auto"` and `None` as is). fp32 master weights
    by default (bf16 weights cannot hold lr-1e-6 updates); autocast comes from `--bf16`.
    """
    import torch

    return model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)


def load_policy(policy_class: type, model_args: Any, source: str, **kwargs: Any):
    """
    The policy of a training script: `policy_class.from_pretrained(--model_name_or_path)` with the `--dtype` of
    `policy_dtype` and `--attn_implementation` (and `kwargs`, e.g. `revision`).

    Raises:
        `ValueError` saying what to pass (`source`, e.g. "the policy folder written by `vapi-trl convert-var`") when
        `--model_name_or_path` is missing.
    """
    if model_args.model_name_or_path is None:
        raise ValueError(f"--model_name_or_path is required: {source}.")
    return policy_class.from_pretrained(
        model_args.model_name_or_path,
        dtype=policy_dtype(model_args),
        attn_implementation=model_args.attn_implementation,
        **kwargs,
    )


def load_image_tokenizer(image_tokenizer_class: type, path: str | None, converter: str):
    """
    `image_tokenizer_class.from_pretrained(--image_tokenizer_path)` (an image-tokenizer folder, e.g.
    `OUTPUT_DIR/image_tokenizer` of the converter).

    Raises:
        `ValueError` naming the converter when `--image_tokenizer_path` is missing.
    """
    if path is None:
        raise ValueError(f"--image_tokenizer_path is required: the image_tokenizer folder of `vapi-trl {converter}`.")
    return image_tokenizer_class.from_pretrained(path)


def run_training(
    model: Any,
    processor: Any,
    dataset: Any,
    training_args: Any,
    model_args: Any = None,
    peft_config: Any = None,
    dataset_name: str | None = None,
    after_train: Callable[[Any], None] | None = None,
):
    """
    The one training entry point of every training command and example: build a `VAPiTrainer` with the family
    `processor` (rows -> the policy's condition, and the image tokenizer; `vapi_trl.models.processing_utils`) and the
    PEFT adapter of `model_args` (`--use_peft`, unless `peft_config` is given), train (resuming from
    `training_args.resume_from_checkpoint`: `last`/`true` or a folder; a fresh run refuses an `output_dir` that holds
    files unless `overwrite_output_dir`, see `resolve_resume_checkpoint`), call `after_train(trainer)` if given, save
    the policy to `output_dir`, write the model card and push to the Hub with `--push_to_hub`; returns the trainer.
    """
    from vapi_trl import VAPiTrainer

    if peft_config is None and model_args is not None:
        from trl import get_peft_config

        peft_config = get_peft_config(model_args)  # `--use_peft` and the `--lora_*` options
    if getattr(training_args, "output_dir_checked", False):
        resume = training_args.resume_from_checkpoint
    else:
        resume = resolve_resume_checkpoint(training_args)

    trainer = VAPiTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=resume)
    if after_train is not None:
        after_train(trainer)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
    return trainer


def option_spellings(name: str) -> list[str]:
    """`--output_dir` -> `["--output_dir", "--output-dir"]` (snake_case first, as transformers' `HfArgumentParser`);
    a short option or a one-word name has one spelling."""
    if not name.startswith("--"):
        return [name]
    snake = "--" + name[2:].replace("-", "_")
    kebab = "--" + name[2:].replace("_", "-")
    return [snake] if snake == kebab else [snake, kebab]


class _DeprecatedAliasMixin:
    """Prints `<prog>: warning: ...` (as argparse prints its errors; once per parser) when the option is given under
    one of its deprecated names, then stores the value as under the primary name."""

    deprecated_aliases: tuple[str, ...] = ()

    def __call__(self, parser, namespace, values, option_string=None):
        warned = parser.__dict__.setdefault("_vapi_warned_aliases", set())
        if option_string in self.deprecated_aliases and option_string not in warned:
            warned.add(option_string)
            print(
                f"{parser.prog}: warning: {option_string} is deprecated and will be removed in vapi-trl 0.3; use "
                f"{self.option_strings[0]} (the same option).",
                file=sys.stderr,
            )
        super().__call__(parser, namespace, values, option_string)


def add_argument(
    container: argparse._ActionsContainer,
    *names: str,
    aliases: tuple[str, ...] = (),
    deprecated: tuple[str, ...] = (),
    **kwargs: Any,
) -> argparse.Action:
    """
    `container.add_argument(*names, **kwargs)` (a parser or an argument group) under the CLI convention of TRL and
    transformers: every long name in both spellings, `--snake_case` first (the primary, shown in `usage`) and
    `--kebab-case`. `aliases` are other accepted names (the official LlamaGen/VAR vocabulary of the converters, e.g.
    `--dim` for `--hidden_size`), also in both spellings; `deprecated` are old names that still work but warn once
    (`--out` for `--output_dir`). Returns the action.
    """
    option_strings = []
    for name in (*names, *aliases, *deprecated):
        option_strings += [spelling for spelling in option_spellings(name) if spelling not in option_strings]
    if deprecated:
        old_names = tuple(spelling for name in deprecated for spelling in option_spellings(name))
        action_class = container._registry_get("action", kwargs.get("action"), kwargs.get("action"))
        kwargs["action"] = type(
            "Deprecated" + action_class.__name__.lstrip("_"),
            (_DeprecatedAliasMixin, action_class),
            {"deprecated_aliases": old_names},
        )
        note = f"{', '.join(old_names)}: deprecated alias."
        kwargs["help"] = f"{kwargs['help']} ({note})" if kwargs.get("help") else note
    return container.add_argument(*option_strings, **kwargs)


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Add `--overwrite` (replace the `what` already in the output folder) to a command's parser."""
    add_argument(
        parser,
        "--overwrite",
        action="store_true",
        help=f"Write into an output folder that is not empty, replacing the {what} there (default: refuse).",
    )


def add_resume_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--overwrite` for a resumable sample writer (`sample`, `sample-geneval`), which resumes by default."""
    add_argument(
        parser,
        "--overwrite",
        action="store_true",
        help="Replace the samples already in the output folder (default: resume only a run of the same model, image "
        "tokenizer and settings, and refuse anything else).",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--device` (default: cuda if available, else cpu) to a command's parser."""
    add_argument(parser, "--device", default=None, help="Device (default: cuda if available, else cpu).")


# The options of `add_sampling_arguments`, as `SamplingSettings` / `GenEvalSettings` fields.
SAMPLING_OPTIONS = ("seed", "cfg_scale", "temperature", "top_k", "top_p", "bf16")


def add_sampling_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any], helps: dict[str, str]) -> None:
    """
    Add the sampling options of a sample writer (`sample`, `sample-geneval`): `--seed`, `--cfg_scale`,
    `--temperature`, `--top_k`, `--top_p`, `--bf16` and `--resize`, with the command's `defaults` (for the first five
    and `resize`) and `helps` (one per option).
    """
    types = {"seed": int, "cfg_scale": float, "temperature": float, "top_k": int, "top_p": float, "resize": int}
    for name in ("seed", "cfg_scale", "temperature", "top_k", "top_p"):
        add_argument(parser, f"--{name}", type=types[name], default=defaults[name], help=helps[name])
    add_argument(parser, "--bf16", action="store_true", help=helps["bf16"])
    add_argument(parser, "--resize", type=int, default=defaults["resize"], help=helps["resize"])


def sampling_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings fields of the options of `add_sampling_arguments` (`resize` 0 -> `None`, the decoder's size)."""
    return {name: getattr(args, name) for name in SAMPLING_OPTIONS} | {"resize": args.resize or None}


def add_verify_images_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--no_verify_images` (skip decoding every image once before the run) to a command's parser."""
    add_argument(
        parser,
        "--no_verify_images",
        dest="verify_images",
        action="store_false",
        help="Skip the decode check of every image.",
    )


def check_output_folder(path: str, overwrite: bool, flag: str = "--output_dir") -> None:
    """Refuse (`ValueError`) to write into `path` when it exists and is not empty, unless `overwrite`."""
    if overwrite:
        return
    if os.path.isfile(path):
        raise ValueError(f"{flag} {path!r} is a file, not a folder: pick a folder name.")
    if os.path.isdir(path) and os.listdir(path):
        entries = sorted(os.listdir(path))
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(
            f"{flag} {path!r} is not empty ({shown}); its files would be overwritten. Pick another folder, or pass "
            "--overwrite to replace them."
        )


def add_conversion_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the converters' `--dtype` (of the saved policy weights) and `--no_verify` options to `parser`."""
    add_argument(
        parser,
        "--dtype",
        choices=["float32", "bfloat16", "float16", "keep"],
        default="float32",
        help="dtype of the saved policy weights (default float32; 'keep' keeps the checkpoint's). The VQ stays fp32.",
    )
    add_argument(
        parser,
        "--no_verify",
        dest="verify",
        action="store_false",
        help="Skip reloading the written folders to compare every tensor.",
    )
    add_overwrite_argument(parser, "converted folders")


def saved_dtype(name: str):
    """The converters' `--dtype` as a `torch.dtype`; `None` for `"keep"` (the checkpoint's own dtype)."""
    import torch

    return None if name == "keep" else getattr(torch, name)


def print_inferred(written: dict[str, str], keys: tuple[str, ...]) -> None:
    """Print the architecture the converter read from the checkpoint (`keys` of the written policy's config.json)."""
    import json

    config_file = os.path.join(written.get("policy", ""), "config.json")
    if "policy" not in written or not os.path.isfile(config_file):
        return
    with open(config_file, encoding="utf-8") as file:
        config = json.load(file)
    print("inferred: " + ", ".join(f"{key}={config[key]}" for key in keys if key in config))


def print_written(written: dict[str, str]) -> int:
    """Print the `kind: path` of each folder a converter wrote; returns the exit code 0."""
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
