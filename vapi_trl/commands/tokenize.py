"""`vapi-trl tokenize`: pre-extract the clean tokens x* of a class-to-image dataset into a `gt_ids` column, once."""

import argparse

from vapi_trl.commands._common import (
    add_argument,
    add_device_argument,
    add_overwrite_argument,
    add_verify_images_argument,
    check_output_folder,
)


def make_parser(subparsers, name: str = "tokenize", help: str = "") -> argparse.ArgumentParser:
    """Add the `tokenize` subcommand to `subparsers` and return its parser."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help + " Saves the dataset (image, class_label, gt_ids [N] int) with `save_to_disk`; pass the "
        "folder to `train-c2i --dataset_name` and the trainer skips the per-step VQ encode.",
    )
    add_argument(
        parser,
        "--image_tokenizer_path",
        required=True,
        help="ImageTokenizerProcessor folder (OUTPUT_DIR/image_tokenizer from convert-llamagen).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    add_argument(source, "--train_dir", help="ImageNet-style folder <train_dir>/<wnid>/*.JPEG.")
    add_argument(
        source, "--dataset_name", aliases=("--dataset",), help="Hub id, local dataset folder or save_to_disk folder."
    )
    add_argument(parser, "--output_dir", deprecated=("--out",), required=True, help="save_to_disk folder to write.")
    add_argument(parser, "--split", default="train", help="Split of --dataset_name (default train).")
    add_argument(parser, "--image_column", default="image", help="Image column of --dataset_name (default image).")
    add_argument(
        parser,
        "--label_column",
        default=None,
        help="Class column of --dataset_name (default: label, or class_label when only that exists).",
    )
    add_argument(parser, "--images_per_class", type=int, default=None, help="Keep this many random images per class.")
    add_argument(parser, "--subset_seed", type=int, default=0, help="Seed of the per-class selection (default 0).")
    add_argument(parser, "--batch_size", type=int, default=64, help="Images per VQ encode (default 64).")
    add_overwrite_argument(parser, "dataset")
    add_device_argument(parser)
    add_verify_images_argument(parser)
    return parser


def add_gt_ids(dataset, image_tokenizer, batch_size: int = 64):
    """`dataset` with a `gt_ids` column: the tokenizer's ids `[N]` (int) of each row's `image`."""
    from datasets import Sequence, Value

    def encode(batch):
        return {"gt_ids": image_tokenizer(batch["image"])["input_ids"].cpu().tolist()}

    features = dataset.features.copy()
    features["gt_ids"] = Sequence(Value("int32"), length=image_tokenizer.num_image_tokens)
    return dataset.map(encode, batched=True, batch_size=batch_size, features=features, desc="VQ encode")


def main(args: argparse.Namespace) -> int:
    """Pre-extract the `gt_ids` column of the dataset named in `args`; returns the exit code."""
    import torch

    from transformers import AutoProcessor

    import vapi_trl.models  # noqa: F401  (registers the image tokenizers with AutoProcessor)
    from vapi_trl.data import load_c2i_dataset

    check_output_folder(args.output_dir, args.overwrite)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # AutoProcessor: single-scale (LlamaGen) and multi-scale (VAR) tokenizers alike.
    image_tokenizer = AutoProcessor.from_pretrained(args.image_tokenizer_path).to(device)
    dataset = load_c2i_dataset(
        train_dir=args.train_dir,
        dataset_name=args.dataset_name,
        split=args.split,
        image_column=args.image_column,
        label_column=args.label_column,
        images_per_class=args.images_per_class,
        subset_seed=args.subset_seed,
        verify_images=args.verify_images,
    )
    dataset = add_gt_ids(dataset, image_tokenizer, batch_size=args.batch_size)
    dataset.save_to_disk(args.output_dir)
    print(f"{len(dataset)} rows with gt_ids [{image_tokenizer.num_image_tokens}] -> {args.output_dir}")
    return 0


__all__ = ["add_gt_ids", "main", "make_parser"]
