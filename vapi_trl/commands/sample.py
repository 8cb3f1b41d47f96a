"""`vapi-trl sample`: class-to-image samples for FID (PNGs + ADM `.npz` + run record), resumable."""

import argparse

from vapi_trl.commands._common import add_argument, add_device_argument, add_resume_overwrite_argument
from vapi_trl.commands._common import add_sampling_arguments, sampling_settings


def make_parser(subparsers, name: str = "sample", help: str = "") -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help + " Writes OUTPUT_DIR/000000.png..., OUTPUT_DIR/samples.npz (arr_0, uint8 [N, S, S, 3]) and "
        "OUTPUT_DIR/run.json. Rerunning with the same model, image tokenizer and settings skips finished batches; any "
        "other content of OUTPUT_DIR is refused unless --overwrite.",
    )
    add_argument(
        parser,
        "--model_name_or_path",
        aliases=("--model",),
        required=True,
        help="Class-conditional policy folder (LlamaGen C2I or VAR), e.g. OUTPUT_DIR/policy of convert-llamagen.",
    )
    add_argument(
        parser,
        "--image_tokenizer_path",
        required=True,
        help="ImageTokenizerProcessor folder, e.g. OUTPUT_DIR/image_tokenizer of convert-llamagen.",
    )
    add_argument(parser, "--output_dir", deprecated=("--out",), required=True, help="Sample folder.")
    add_argument(
        parser, "--num_samples", type=int, default=50_000, help="Number of images (default 50000, as ImageNet FID)."
    )
    add_argument(
        parser,
        "--batch_size",
        type=int,
        default=32,
        help="Images per sampling call; part of the seeding, keep it when resuming (default 32).",
    )
    add_argument(
        parser,
        "--label_scheme",
        choices=["random", "balanced"],
        default="random",
        help="random: uniform random labels, as the reference sampler (default); balanced: i %% classes.",
    )
    add_sampling_arguments(
        parser,
        {"seed": 0, "cfg_scale": 1.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "resize": 256},
        {
            "seed": "Global seed of labels and sampling (default 0).",
            "cfg_scale": "Classifier-free guidance; 1.0 = none (the 'without CFG' numbers).",
            "temperature": "Sampling temperature (default 1.0).",
            "top_k": "Top-k filter, 0 = off.",
            "top_p": "Nucleus filter, 1 = off.",
            "bf16": "Run the policy under bf16 autocast (evaluation setting).",
            "resize": "Saved image side (bicubic, no antialias); 0 keeps the decoder resolution (default 256).",
        },
    )
    add_device_argument(parser)
    add_resume_overwrite_argument(parser)
    add_argument(parser, "--no_npz", dest="write_npz", action="store_false", help="Do not write the .npz.")
    return parser


def main(args: argparse.Namespace) -> int:
    import json

    import torch

    from transformers import AutoModel, AutoProcessor

    import vapi_trl.models  # noqa: F401  (registers the policies and image tokenizers with the Auto classes)
    from vapi_trl.evaluation.sample import SamplingSettings, sample_class_to_image

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # Auto classes: any class-conditional family (LlamaGen C2I, VAR) samples through the same command.
    model = AutoModel.from_pretrained(args.model_name_or_path).to(device).eval()
    image_tokenizer = AutoProcessor.from_pretrained(args.image_tokenizer_path).to(device)
    image_tokenizer.check_compatible(model.codebook_size, model.num_image_tokens)
    settings = SamplingSettings(
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        label_scheme=args.label_scheme,
        **sampling_settings(args),
        model_path=args.model_name_or_path,
        image_tokenizer_path=args.image_tokenizer_path,
    )
    record = sample_class_to_image(
        model, image_tokenizer, args.output_dir, settings, write_npz=args.write_npz, overwrite=args.overwrite
    )
    print(
        json.dumps(
            {key: record[key] for key in ("generated_batches", "skipped_batches")}
            | {"npz": record.get("npz"), "output_dir": args.output_dir}
        )
    )
    return 0
