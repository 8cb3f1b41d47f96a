"""`vapi-trl convert-llamagen`: official LlamaGen C2I/T2I GPT and VQ-16 `.pt` files -> HF folders."""

import argparse

from vapi_trl.commands._common import (
    add_argument,
    add_conversion_output_arguments,
    check_output_folder,
    print_inferred,
    print_written,
    saved_dtype,
)


def make_parser(subparsers, name: str = "convert-llamagen", help: str = "") -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help
        + " Writes OUTPUT_DIR/policy (LlamaGenForClassToImage or, for t2i_*.pt, LlamaGenForTextToImage: "
        "config.json + model.safetensors) and OUTPUT_DIR/image_tokenizer (ImageTokenizerProcessor with the VQ in vq_model/). "
        "Both loads are strict. T2I example: --gpt_ckpt t2i_XL_stage1_256.pt --vq_ckpt vq_ds16_t2i.pt --gpt_model "
        "GPT-XL --image_size 256; the flan-T5-XL text encoder is loaded separately (--text_encoder_name_or_path of "
        "train-t2i / sample-geneval).",
    )
    add_argument(
        parser,
        "--gpt_ckpt",
        help="Official GPT file, e.g. c2i_XXL_384.pt or t2i_XL_stage1_256.pt (official: --gpt-ckpt).",
    )
    add_argument(
        parser,
        "--task",
        choices=["auto", "c2i", "t2i"],
        default="auto",
        help="Conditioning of the GPT file: auto (default) detects T2I from its caption keys (cls_embedding.cap_proj)",
    )
    add_argument(parser, "--vq_ckpt", help="Official VQ-16 file, e.g. vq_ds16_c2i.pt (official: --vq-ckpt).")
    add_argument(parser, "--output_dir", deprecated=("--out",), required=True, help="Output folder.")
    add_argument(
        parser, "--gpt_model", help="Size preset: GPT-B, GPT-L, GPT-XL, GPT-XXL or GPT-3B (official: --gpt-model)."
    )
    add_argument(
        parser,
        "--image_size",
        type=int,
        default=None,
        help="Required: image side the checkpoint was trained at, which the file does not record; sets block_size and "
        "the VQ grid. Releases: C2I 256 (c2i_B_256, c2i_L_256) or 384 (c2i_*_384); T2I 256 (t2i_XL_stage1_256) or "
        "512 (t2i_XL_stage2_512).",
    )
    add_conversion_output_arguments(parser)
    gpt = parser.add_argument_group(
        "GPT architecture overrides (over --gpt_model; config names, with the official LlamaGen names as aliases)"
    )
    for option, official, kind, text in (
        ("--hidden_size", "--dim", int, "model width"),
        ("--num_hidden_layers", "--n_layer", int, "number of blocks"),
        ("--num_attention_heads", "--n_head", int, "query heads"),
        ("--num_key_value_heads", "--n_kv_head", int, "key/value heads (default: --num_attention_heads)"),
        ("--intermediate_size", None, int, "SwiGLU width (default: derived as the official code)"),
        ("--vocab_size", None, int, "image codebook size (default 16384)"),
        ("--num_classes", None, int, "number of classes (default 1000)"),
        ("--cls_token_num", None, int, "condition slots (C2I: 1; T2I: read from the checkpoint, 120)"),
        ("--caption_dim", None, int, "T2I caption feature width (read from the checkpoint, 2048)"),
        ("--block_size", None, int, "image tokens (default (image_size / 16)^2)"),
        ("--rope_theta", "--rope_base", float, "RoPE base (default 10000)"),
    ):
        aliases = () if official is None else (official,)
        add_argument(gpt, option, aliases=aliases, type=kind, help=text)
    vq = parser.add_argument_group("VQ architecture overrides (defaults: VQ-16)")
    add_argument(vq, "--codebook_size", type=int, help="codes (16384)")
    add_argument(vq, "--codebook_embed_dim", type=int, help="code dimension (8)")
    add_argument(vq, "--ch_mult", type=int, nargs="+", help="channel multipliers (1 1 2 2 4)")
    add_argument(vq, "--z_channels", type=int, help="latent channels (256)")
    return parser


def main(args: argparse.Namespace) -> int:
    from vapi_trl.models.llamagen.convert_llamagen_to_hf import convert_llamagen_checkpoints

    check_output_folder(args.output_dir, args.overwrite)

    gpt_fields = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "num_classes",
        "cls_token_num",
        "caption_dim",
        "block_size",
        "rope_theta",
    )
    vq_fields = ("codebook_size", "codebook_embed_dim", "ch_mult", "z_channels")
    gpt_overrides = {name: getattr(args, name) for name in gpt_fields if getattr(args, name) is not None}
    vq_overrides = {name: getattr(args, name) for name in vq_fields if getattr(args, name) is not None}
    if "vocab_size" in gpt_overrides and "codebook_size" not in vq_overrides:
        vq_overrides["codebook_size"] = gpt_overrides["vocab_size"]
    written = convert_llamagen_checkpoints(
        args.output_dir,
        gpt_ckpt=args.gpt_ckpt,
        vq_ckpt=args.vq_ckpt,
        gpt_model=args.gpt_model,
        image_size=args.image_size,
        gpt_overrides=gpt_overrides,
        vq_overrides=vq_overrides,
        dtype=saved_dtype(args.dtype),
        verify=args.verify,
        task=None if args.task == "auto" else args.task,
    )
    print_inferred(written, ("task", "hidden_size", "num_hidden_layers", "num_attention_heads", "block_size"))
    return print_written(written)
