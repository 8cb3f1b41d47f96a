"""`vapi-trl convert-var`: official VAR `vae_ch160v4096z32.pth` and `var_d*.pth` files -> HF folders."""

import argparse

from vapi_trl.commands._common import (
    add_argument,
    add_conversion_output_arguments,
    check_output_folder,
    print_inferred,
    print_written,
    saved_dtype,
)


def make_parser(subparsers, name: str = "convert-var", help: str = "") -> argparse.ArgumentParser:
    """Add the `convert-var` subcommand to `subparsers` and return its parser."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help
        + " Writes OUTPUT_DIR/image_tokenizer (VARImageTokenizerProcessor with the VQ-VAE in vq_model/) and, "
        "with --var_ckpt, OUTPUT_DIR/policy (VARForClassToImage: config.json + model.safetensors, including a frozen copy of "
        "the tokenizer's quantizer). The architecture is read from the checkpoints; both loads are strict.",
    )
    add_argument(parser, "--vae_ckpt", required=True, help="vae_ch160v4096z32.pth (official: --vae-ckpt).")
    add_argument(parser, "--var_ckpt", help="Transformer file, e.g. var_d16.pth (official: --var-ckpt).")
    add_argument(parser, "--output_dir", deprecated=("--out",), required=True, help="Output folder.")
    add_argument(
        parser,
        "--patch_nums",
        type=int,
        nargs="+",
        help="Scale sides (default: read from the transformer's lvl_1L, else 1 2 3 4 5 6 8 10 13 16).",
    )
    add_argument(
        parser,
        "--num_attention_heads",
        aliases=("--num_heads",),
        type=int,
        help="Attention heads (official: --num_heads); required when the checkpoint has no attn.scale_mul_1H11 to "
        "read them from (dot-product attention; the VAR releases use heads = depth).",
    )
    add_conversion_output_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    """Convert the official VAR files named in `args`; returns the exit code."""
    from vapi_trl.models.var.convert_var_to_hf import convert_var_checkpoints

    check_output_folder(args.output_dir, args.overwrite)
    written = convert_var_checkpoints(
        args.output_dir,
        var_ckpt=args.var_ckpt,
        vae_ckpt=args.vae_ckpt,
        patch_nums=args.patch_nums,
        num_attention_heads=args.num_attention_heads,
        dtype=saved_dtype(args.dtype),
        verify=args.verify,
    )
    print_inferred(written, ("num_hidden_layers", "hidden_size", "num_attention_heads", "attn_l2_norm", "patch_nums"))
    return print_written(written)


__all__ = ["main", "make_parser"]
