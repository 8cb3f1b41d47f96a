"""`vapi-trl sample-geneval`: GenEval samples of a text-to-image policy (LlamaGen T2I or Janus-Pro), resumable."""

import argparse

from vapi_trl.commands._common import add_argument, add_device_argument, add_resume_overwrite_argument
from vapi_trl.commands._common import add_sampling_arguments, sampling_settings


def make_parser(subparsers, name: str = "sample-geneval", help: str = "") -> argparse.ArgumentParser:
    """Add the `sample-geneval` subcommand to `subparsers` and return its parser."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help + " Writes OUTPUT_DIR/<00000>/metadata.jsonl (the prompt's line), "
        "OUTPUT_DIR/<00000>/samples/0000.png... and grid.png, and OUTPUT_DIR/run.json (family, CFG, temperature, top-k, top-p, seed). The family is read from the "
        "checkpoint's config.json: model_type janus -> Janus-Pro (tokenizer and VQ from the same folder); "
        "vapi_llamagen with task t2i -> LlamaGen T2I (T5 encoder + image tokenizer folder). Rerunning with the same "
        "settings skips complete prompt folders.",
    )
    add_argument(
        parser,
        "--model_name_or_path",
        aliases=("--model",),
        required=True,
        help="Policy folder: a Janus(-Pro) checkpoint or a LlamaGen T2I policy (convert-llamagen OUTPUT_DIR/policy).",
    )
    add_argument(
        parser,
        "--metadata_file",
        aliases=("--metadata",),
        required=True,
        help="GenEval prompts, prompts/evaluation_metadata.jsonl (553 lines).",
    )
    add_argument(parser, "--output_dir", deprecated=("--out",), required=True, help="GenEval output folder.")
    add_argument(
        parser,
        "--image_tokenizer_path",
        default=None,
        help="ImageTokenizerProcessor folder (LlamaGen; default: MODEL/../image_tokenizer). Janus: its own VQ.",
    )
    add_argument(
        parser,
        "--text_encoder_name_or_path",
        default=None,
        help="LlamaGen: T5 checkpoint or T5CaptionEncoder folder (default: the one saved with the policy, else "
        "google/flan-t5-xl). Janus: tokenizer (default: the model folder).",
    )
    add_argument(
        parser,
        "--num_images",
        aliases=("--n_samples",),
        type=int,
        default=4,
        help="Images per prompt (default 4; GenEval's --n_samples).",
    )
    add_argument(
        parser, "--batch_size", type=int, default=4, help="Images per sampling call; part of the seeding (default 4)."
    )
    add_sampling_arguments(
        parser,
        {"seed": 0, "cfg_scale": None, "temperature": None, "top_k": None, "top_p": None, "resize": 0},
        {
            "seed": "Global seed (default 0).",
            "cfg_scale": "Classifier-free guidance (default: Janus 5.0; LlamaGen 7.5, the official script's).",
            "temperature": "Sampling temperature (default 1.0).",
            "top_k": "Top-k, 0 = off (Janus 0, LlamaGen 2000).",
            "top_p": "Nucleus filter, 1 = off (default).",
            "bf16": "Run the policy under bf16 autocast.",
            "resize": "Saved image side (bicubic); 0 keeps the decoder resolution (default).",
        },
    )
    add_argument(parser, "--no_grid", dest="grid", action="store_false", help="Do not write grid.png.")
    add_argument(parser, "--max_prompts", type=int, default=None, help="Only the first N prompts (smoke runs).")
    add_resume_overwrite_argument(parser)
    add_device_argument(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    """Write GenEval samples for the policy named in `args`; returns the exit code."""
    import json

    import torch

    from vapi_trl.evaluation.geneval import (
        GenEvalSettings,
        load_text_to_image_policy,
        read_geneval_metadata,
        sample_geneval,
    )

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    metadata = read_geneval_metadata(args.metadata_file)
    if args.max_prompts is not None:
        metadata = metadata[: args.max_prompts]
    policy, processing_class, image_tokenizer, info = load_text_to_image_policy(
        args.model_name_or_path,
        image_tokenizer_path=args.image_tokenizer_path,
        text_encoder_name_or_path=args.text_encoder_name_or_path,
        device=device,
    )
    settings = GenEvalSettings(
        num_images=args.num_images,
        batch_size=args.batch_size,
        **sampling_settings(args),
        grid=args.grid,
        family=info["family"],
        model_path=args.model_name_or_path,
        image_tokenizer_path=info["image_tokenizer_path"],
        text_encoder_path=info["text_encoder_path"],
        metadata_path=args.metadata_file,
    )
    record = sample_geneval(
        policy, processing_class, image_tokenizer, metadata, args.output_dir, settings, overwrite=args.overwrite
    )
    keys = ("family", "cfg_scale", "temperature", "top_k", "top_p", "generated_prompts", "skipped_prompts")
    print(json.dumps({key: record[key] for key in keys} | {"output_dir": args.output_dir}))
    return 0


__all__ = ["main", "make_parser"]
