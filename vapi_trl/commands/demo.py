"""`vapi-trl demo`: VA-π end to end in minutes on CPU, on the embedded Fashion-MNIST subset and tiny generator."""

import argparse

from vapi_trl.commands._common import add_argument, quiet_weight_bars


def make_parser(subparsers, name: str = "demo", help: str = "") -> argparse.ArgumentParser:
    from vapi_trl.demo.run import DemoSettings

    defaults = DemoSettings()
    parser = subparsers.add_parser(
        name,
        help=help,
        description=(
            "Align the shipped small LlamaGen (Fashion-MNIST, 10 classes, 8×8 tokens, 512 codes) with VA-π, offline, "
            "and write base / aligned free-running samples side by side, metrics of the base, the temperature-tuned "
            "base (τ/top-k chosen on the validation split) and the aligned policy (report.json), and the aligned "
            "checkpoint. No download: data and weights ship with the package. Reward −(MSE + LPIPS) when the LPIPS "
            "backbone is cached locally, else −MSE."
        ),
    )
    add_argument(
        parser,
        "--output_dir",
        deprecated=("--out",),
        default="vapi-demo",
        help="Output folder (default: %(default)s).",
    )
    add_argument(
        parser, "--steps", type=int, default=defaults.steps, help="VA-π optimizer steps (default: %(default)s)."
    )
    add_argument(
        parser,
        "--eval_samples",
        type=int,
        default=defaults.eval_samples,
        help="Free-running samples per evaluation, base, tuned base and aligned (default: %(default)s, at most "
        "2000: the held-out test split holds 2 × 2000 images for the real-vs-real floor).",
    )
    add_argument(
        parser,
        "--val_samples",
        type=int,
        default=defaults.val_samples,
        help="Samples per validation evaluation of the base's temperature/top-k sweep (default: %(default)s, at most "
        "1000).",
    )
    add_argument(
        parser,
        "--num_images",
        type=int,
        default=defaults.num_images,
        help="Source images per step, U (default: %(default)s).",
    )
    add_argument(
        parser,
        "--num_generations",
        type=int,
        default=defaults.num_generations,
        help="Samples per image, G (default: %(default)s).",
    )
    add_argument(
        parser,
        "--learning_rate",
        type=float,
        default=defaults.learning_rate,
        help="AdamW learning rate (default: %(default)s).",
    )
    add_argument(
        parser,
        "--context_noise_prob",
        type=float,
        default=defaults.context_noise_prob,
        help="ξ, context corruption probability (default: %(default)s).",
    )
    add_argument(
        parser,
        "--ce_coef",
        type=float,
        default=defaults.ce_coef,
        help="β, weight of the cross-entropy prior (default: %(default)s).",
    )
    add_argument(parser, "--seed", type=int, default=defaults.seed, help="Training and sampling seed.")
    add_argument(
        parser,
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's, one per core). On this project's 2-core machine 2 threads take "
        "116 s and 1 thread 158 s with the same numbers (the VQ decoder's convolutions split well); pass 1 on a busy "
        "machine.",
    )
    add_argument(parser, "--quiet", action="store_true", help="No progress output.")
    add_argument(parser, "--overwrite", action="store_true",
                 help="Write into a non-empty --output_dir, replacing its report and policy.")  # fmt: skip
    return parser


def main(args: argparse.Namespace) -> int:
    import os

    from vapi_trl.demo.run import DemoSettings, format_report, run_demo

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be ≥ 1, got {args.threads}.")
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite:
        # Checked here too, before the embedded model and data load.
        raise ValueError(
            f"--output_dir {args.output_dir!r} is not empty; the demo would overwrite its report, grids and policy. Pick another "
            "folder, or pass --overwrite."
        )

    settings = DemoSettings(
        steps=args.steps, num_images=args.num_images, num_generations=args.num_generations,
        learning_rate=args.learning_rate, context_noise_prob=args.context_noise_prob, ce_coef=args.ce_coef,
        eval_samples=args.eval_samples, val_samples=args.val_samples, seed=args.seed,
    )  # fmt: skip
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or previous_threads)
    try:
        with quiet_weight_bars():
            report = run_demo(args.output_dir, settings, progress=not args.quiet, overwrite=args.overwrite)
    finally:
        torch.set_num_threads(previous_threads)
    print(format_report(report))
    print(
        f"Wrote {args.output_dir}/report.json, side_by_side.png (base | aligned), samples_before.png, "
        f"samples_tuned_base.png, samples_after.png and the aligned policy in {args.output_dir}/policy"
    )
    return 0
