"""
`vapi-trl encode-captions`: pre-compute the frozen T5 caption features of a text-to-image dataset, once.

Writes the dataset (`image`, `prompt`, `caption_embeds`) with `save_to_disk`. `caption_embeds` holds the VALID tokens
of each caption only, `(L, d_model)` float32 with `L <= max_length` (the layout of official LlamaGen's per-image
`.npy` features); `LlamaGenForTextToImage.prepare_condition` right-aligns them into the 120 slots and builds the
mask. Pass the folder to `train-t2i --dataset_name` and the trainer neither loads nor runs T5.
"""

import argparse

from vapi_trl.commands._common import (
    add_argument,
    add_device_argument,
    add_overwrite_argument,
    add_verify_images_argument,
    check_output_folder,
)


def make_parser(subparsers, name: str = "encode-captions", help: str = "") -> argparse.ArgumentParser:
    """Add the `encode-captions` subcommand to `subparsers` and return its parser."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help + " Saves the dataset (image, prompt, caption_embeds [L, d_model] float32: valid tokens "
        "only) with save_to_disk, for train-t2i --dataset_name.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    add_argument(
        source, "--dataset_name", aliases=("--dataset",), help="Hub id, local dataset folder or save_to_disk folder."
    )
    add_argument(source, "--tar_shards", help="Folder of webdataset shards ({key}.jpg|png + .txt).")
    add_argument(parser, "--output_dir", deprecated=("--out",), required=True, help="save_to_disk folder to write.")
    add_argument(
        parser,
        "--text_encoder_name_or_path",
        default="google/flan-t5-xl",
        help="T5 checkpoint or T5CaptionEncoder folder (default google/flan-t5-xl).",
    )
    add_argument(
        parser, "--max_length", type=int, default=120, help="Caption slots, the policy's cls_token_num (default 120)."
    )
    add_argument(
        parser,
        "--dtype",
        choices=["bfloat16", "float16", "float32"],
        default="bfloat16",
        help="T5 dtype (official: bf16).",
    )
    add_overwrite_argument(parser, "dataset")
    add_argument(parser, "--split", default="train", help="Split of --dataset_name (default train).")
    add_argument(parser, "--image_column", default=None, help="Image column (default image; shards: detected).")
    add_argument(parser, "--caption_column", default=None, help="Caption column (default prompt; shards: txt).")
    add_argument(parser, "--num_samples", type=int, default=None, help="Keep the first N rows.")
    add_argument(parser, "--batch_size", type=int, default=64, help="Captions per T5 call (default 64).")
    add_device_argument(parser)
    add_verify_images_argument(parser)
    return parser


def add_caption_embeds(dataset, text_encoder, batch_size: int = 64):
    """
    `dataset` (map-style, with a `prompt` column) with a `caption_embeds` column: per row the valid T5 tokens
    `(L, d_model)` float32, `1 <= L <= text_encoder.max_length` (`Array2D` with a variable first dimension).
    """
    from datasets import Array2D

    def encode(batch):
        out = text_encoder.encode(batch["prompt"])
        embeds, mask = out["caption_embeds"].cpu(), out["caption_mask"].cpu().bool()
        return {"caption_embeds": [row[keep].numpy() for row, keep in zip(embeds, mask)]}

    features = dataset.features.copy()
    features["caption_embeds"] = Array2D(shape=(None, text_encoder.hidden_size), dtype="float32")
    dataset = dataset.map(encode, batched=True, batch_size=batch_size, features=features, desc="T5 encode")
    # numpy rows (not nested lists of 245K Python floats) for the trainer's `prepare_condition`.
    return dataset.with_format("numpy", columns=["caption_embeds"], output_all_columns=True)


def main(args: argparse.Namespace) -> int:
    """Cache the T5 caption features of the dataset named in `args`; returns the exit code."""
    import torch

    from vapi_trl.data import load_t2i_dataset
    from vapi_trl.models.llamagen.text_encoder import load_caption_encoder

    check_output_folder(args.output_dir, args.overwrite)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    text_encoder = load_caption_encoder(args.text_encoder_name_or_path, args.max_length, args.dtype).to(device)
    dataset = load_t2i_dataset(
        dataset_name=args.dataset_name,
        tar_shards=args.tar_shards,
        split=args.split,
        image_column=args.image_column,
        caption_column=args.caption_column,
        num_samples=args.num_samples,
        verify_images=args.verify_images,
    )
    dataset = add_caption_embeds(dataset, text_encoder, batch_size=args.batch_size)
    dataset.save_to_disk(args.output_dir)
    width = text_encoder.hidden_size
    print(f"{len(dataset)} rows with caption_embeds [L <= {args.max_length}, {width}] -> {args.output_dir}")
    return 0


__all__ = ["add_caption_embeds", "main", "make_parser"]
