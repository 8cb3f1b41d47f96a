"""`vapi-trl sample-geneval`: GenEval samples of a text-to-image policy (LlamaGen T2I or Janus-Pro), resumable."""

import argparse


def make_parser(subparsers, name: str = "sample-geneval", help: str = "") -> argparse.ArgumentParser:
    """Add the `sample-geneval` subcommand to `subparsers` and return its parser."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help + " Writes OUT/<00000>/metadata.jsonl (the prompt's line), OUT/<00000>/samples/0000.png... "
        "and grid.png, and OUT/run.json (family, CFG, temperature, top-k, top-p, seed). The family is read from the "
        "checkpoint's config.json: model_type janus -> Janus-Pro (tokenizer and VQ from the same folder); "
        "vapi_llamagen with task t2i -> LlamaGen T2I (T5 encoder + image tokenizer folder). Rerunning with the same "
        "settings skips complete prompt folders.",
    )
    parser.add_argument(
        "--model_name_or_path",
        "--model",
        dest="model_name_or_path",
        required=True,
        help="Policy folder: a Janus(-Pro) checkpoint or a LlamaGen T2I policy (convert-llamagen OUT/policy).",
    )
    parser.add_argument(
        "--metadata",
        "--metadata_file",
        dest="metadata",
        required=True,
        help="GenEval prompts, prompts/evaluation_metadata.jsonl (553 lines).",
    )
    parser.add_argument("--output_dir", "--out", dest="output_dir", required=True, help="GenEval output folder.")
    parser.add_argument(
        "--image_tokenizer_path",
        "--image-tokenizer-path",
        dest="image_tokenizer_path",
        default=None,
        help="ImageTokenizerProcessor folder (LlamaGen; default: MODEL/../image_tokenizer). Janus: its own VQ.",
    )
    parser.add_argument(
        "--text_encoder_name_or_path",
        "--text-encoder-name-or-path",
        dest="text_encoder_name_or_path",
        default=None,
        help="LlamaGen: T5 checkpoint or T5CaptionEncoder folder (default: the one saved with the policy, else "
        "google/flan-t5-xl). Janus: tokenizer (default: the model folder).",
    )
    parser.add_argument(
        "--num_images", "--n_samples", dest="num_images", type=int, default=4, help="Images per prompt (default 4)."
    )
    parser.add_argument(
        "--batch_size", type=int, default=4, help="Images per sampling call; part of the seeding (default 4)."
    )
    parser.add_argument(
        "--cfg_scale",
        "--cfg-scale",
        dest="cfg_scale",
        type=float,
        default=None,
        help="Classifier-free guidance (default: Janus 5.0; LlamaGen 7.5, the official script's).",
    )
    parser.add_argument("--temperature", type=float, default=None, help="Sampling temperature (default 1.0).")
    parser.add_argument(
        "--top_k", "--top-k", dest="top_k", type=int, default=None, help="Top-k, 0 = off (Janus 0, LlamaGen 2000)."
    )
    parser.add_argument(
        "--top_p", "--top-p", dest="top_p", type=float, default=None, help="Nucleus filter, 1 = off (default)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Global seed (default 0).")
    parser.add_argument("--bf16", action="store_true", help="Run the policy under bf16 autocast.")
    parser.add_argument(
        "--resize", type=int, default=0, help="Saved image side (bicubic); 0 keeps the decoder resolution (default)."
    )
    parser.add_argument("--no_grid", "--no-grid", dest="grid", action="store_false", help="Do not write grid.png.")
    parser.add_argument("--max_prompts", type=int, default=None, help="Only the first N prompts (smoke runs).")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace the samples already in the output folder (default: resume only a run of the same model, image "
        "tokenizer and settings, and refuse anything else).",
    )
    parser.add_argument("--device", default=None, help="Device (default: cuda if available, else cpu).")
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
    metadata = read_geneval_metadata(args.metadata)
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
        seed=args.seed,
        cfg_scale=args.cfg_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        bf16=args.bf16,
        resize=args.resize or None,
        grid=args.grid,
        family=info["family"],
        model_path=args.model_name_or_path,
        image_tokenizer_path=info["image_tokenizer_path"],
        text_encoder_path=info["text_encoder_path"],
        metadata_path=args.metadata,
    )
    record = sample_geneval(
        policy, processing_class, image_tokenizer, metadata, args.output_dir, settings, overwrite=args.overwrite
    )
    keys = ("family", "cfg_scale", "temperature", "top_k", "top_p", "generated_prompts", "skipped_prompts")
    print(json.dumps({key: record[key] for key in keys} | {"output_dir": args.output_dir}))
    return 0


__all__ = ["main", "make_parser"]
