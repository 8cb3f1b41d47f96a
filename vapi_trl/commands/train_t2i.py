"""
`vapi-trl train-t2i` (and `examples/train_llamagen_t2i.py`): VA-π post-training of a converted LlamaGen T2I policy.

Defaults follow the official LlamaGen T2I launcher (algorithm.md §3): G = 8 samples per image, context noise ξ = 0.5,
reward −(MSE + LPIPS-VGG), CE prior 0.1, clip 0.2, no CFG, the loss forward in train mode as the official trainer
(dropout 0.1 and 10% caption dropout from the policy config; sampling in eval mode; `--loss_forward_mode eval` makes
the passes deterministic), AdamW betas (0.9,
0.999) with weight decay 1e-4, grad-norm clip 1.0, constant LR, 200 steps, bf16 autocast over fp32 master weights. One
micro-batch is one image × G rows (`per_device_train_batch_size 8`); the recipe's 128 images per step are 8 GPUs × GA
16. The learning rate has no default: the recipe uses **1e-6**.

Captions are encoded by a frozen flan-T5-XL (`--text_encoder_name_or_path`, default `google/flan-t5-xl`, 120 slots,
bf16), which is the trainer's `processing_class` (saved with the policy as a reference, not as weights). Or encode them
once with `vapi-trl encode-captions` and pass that dataset: rows with `caption_embeds` skip the encoder, which is then
not loaded.

```bash
vapi-trl convert-llamagen --gpt_ckpt t2i_XL_stage1_256.pt --vq_ckpt vq_ds16_t2i.pt --gpt_model GPT-XL \
    --image_size 256 --output_dir llamagen-t2i-xl
vapi-trl encode-captions --tar_shards data/shards --output_dir data/t5-features   # optional, once per dataset
accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/train_llamagen_t2i.py \
    --model_name_or_path llamagen-t2i-xl/policy --image_tokenizer_path llamagen-t2i-xl/image_tokenizer \
    --tar_shards data/shards --learning_rate 1e-6 --output_dir llamagen-t2i-xl-va-pi
```

Data: `--tar_shards DIR` reads webdataset-style tar shards (`{key}.jpg` or `.png` + `{key}.txt`; one image extension
per dataset) with the `datasets` `webdataset` builder, offline. Or `--dataset_name`: a Hub id, a local dataset folder
or a `save_to_disk` folder (as written by `encode-captions`), with `--image_column` / `--caption_column`.
`--dataset_streaming` streams either source.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments

from vapi_trl.commands._common import make_train_parser, policy_dtype, run_train_command, run_training
from vapi_trl.commands.train_c2i import C2I_RECIPE_DEFAULTS
from vapi_trl.config import VAPiConfig

# T2I recipe (algorithm.md §3): the C2I recipe with 200 steps and ξ = 0.5; `learning_rate` stays required (1e-6).
T2I_RECIPE_DEFAULTS = {
    **C2I_RECIPE_DEFAULTS,
    "max_steps": 200,
    "context_noise_prob": 0.5,
    "output_dir": "llamagen-t2i-va-pi",
}

# Image extensions of webdataset shards, in the order they are looked for.
_SHARD_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp")


@dataclass
class T2IScriptArguments(ScriptArguments):
    """
    Data and model options of `train_llamagen_t2i.py`, on top of TRL's `ScriptArguments` (`dataset_name`,
    `dataset_config`, `dataset_train_split`, `dataset_streaming`).

    Parameters:
        image_tokenizer_path (`str`):
            `ImageTokenizerProcessor` folder of the policy's VQ (`convert-llamagen` writes `OUTPUT_DIR/image_tokenizer`).
        text_encoder_name_or_path (`str`, *optional*, defaults to `"google/flan-t5-xl"`):
            T5 checkpoint (Hub id or folder) or a `T5CaptionEncoder` folder; unused when the data has `caption_embeds`.
        text_encoder_dtype (`str`, *optional*, defaults to `"bfloat16"`):
            dtype of the frozen T5 (official: bf16).
        tar_shards (`str`, *optional*):
            Folder of webdataset tar shards (`{key}.jpg|png` + `{key}.txt`).
        image_column (`str`, *optional*):
            Image column of `--dataset_name` (default `image`) or shard extension (default: detected).
        caption_column (`str`, *optional*):
            Caption column (default `prompt`; `txt` for shards).
        num_train_samples (`int`, *optional*):
            Use only the first N rows (after shuffling).
        shuffle_seed (`int`, *optional*):
            Shuffle before taking the subset.
        verify_images (`bool`, *optional*, defaults to `True`):
            Decode every image once and drop (with a log record) those that fail.
    """

    image_tokenizer_path: str | None = field(
        default=None,
        metadata={
            "help": "ImageTokenizerProcessor folder of the policy's VQ (OUTPUT_DIR/image_tokenizer from convert)."
        },
    )
    text_encoder_name_or_path: str = field(
        default="google/flan-t5-xl",
        metadata={"help": "T5 checkpoint or T5CaptionEncoder folder (unused when the data has caption_embeds)."},
    )
    text_encoder_dtype: str = field(
        default="bfloat16",
        metadata={"help": "dtype of the frozen T5 encoder.", "choices": ["bfloat16", "float16", "float32"]},
    )
    tar_shards: str | None = field(
        default=None, metadata={"help": "Folder of webdataset tar shards ({key}.jpg|png + {key}.txt)."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (default image; shards: jpg/png)."})
    caption_column: str | None = field(
        default=None, metadata={"help": "Caption column (default prompt; shards: txt)."}
    )
    num_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    shuffle_seed: int | None = field(default=None, metadata={"help": "Shuffle with this seed before the subset."})
    verify_images: bool = field(
        default=True, metadata={"help": "Decode every image once and drop (and log) those that fail."}
    )


def make_parser(subparsers=None, name: str = "train-t2i", help: str = "", prog: str | None = None):
    """
    The `TrlParser` of the script, with the T2I recipe defaults. With `subparsers`, registers the bare subcommand
    instead, as `trl <command>` does (`vapi-trl` hands the arguments after the command name to `main(argv)`).
    """
    return make_train_parser(subparsers, name, help, prog, T2IScriptArguments, T2I_RECIPE_DEFAULTS)


def _shard_image_column(tar_shards: str) -> str:
    """The image extension of the first sample of the first shard in `tar_shards`."""
    import tarfile

    shards = sorted(name for name in os.listdir(tar_shards) if name.endswith(".tar"))
    if not shards:
        raise ValueError(f"--tar_shards {tar_shards!r} holds no .tar file.")
    with tarfile.open(os.path.join(tar_shards, shards[0])) as tar:
        for member in tar:
            extension = member.name.rsplit(".", 1)[-1].lower()
            if extension in _SHARD_IMAGE_COLUMNS:
                return extension
    raise ValueError(f"{shards[0]} has no image member with extension in {_SHARD_IMAGE_COLUMNS}.")


def load_t2i_dataset(
    dataset_name: str | None = None,
    tar_shards: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    caption_column: str | None = None,
    config_name: str | None = None,
    streaming: bool = False,
    num_samples: int | None = None,
    shuffle_seed: int | None = None,
    verify_images: bool = True,
):
    """
    Text-to-image training rows (`image`, `prompt`, and `caption_embeds` when pre-computed) from tar shards or a
    `datasets` dataset; undecodable images and empty captions are dropped with a report.
    """
    from vapi_trl.data import load_image_dataset

    if (dataset_name is None) == (tar_shards is None):
        raise ValueError("Give exactly one of --tar_shards (webdataset tar folder) and --dataset_name.")
    if tar_shards is not None:
        if not os.path.isdir(tar_shards):
            raise ValueError(f"--tar_shards must be a folder of .tar shards, got {tar_shards!r}.")
        source, kwargs = "webdataset", {"data_dir": tar_shards}
        image_column = image_column or _shard_image_column(tar_shards)
        caption_column = caption_column or "txt"
    else:
        source, kwargs = dataset_name, {"config_name": config_name}
        image_column, caption_column = image_column or "image", caption_column or "prompt"
    dataset = load_image_dataset(
        source,
        split=split,
        image_column=image_column,
        caption_column=caption_column,
        streaming=streaming,
        num_samples=num_samples,
        shuffle_seed=shuffle_seed,
        verify_images=verify_images,
        keep_columns=("caption_embeds", "caption_mask", "gt_ids"),
        **kwargs,
    )
    if has_cached_features(dataset) and hasattr(dataset, "with_format"):
        # numpy rows instead of nested lists of Python floats (120 x 2048 per caption)
        columns = [name for name in ("caption_embeds", "caption_mask") if name in dataset.column_names]
        dataset = dataset.with_format("numpy", columns=columns, output_all_columns=True)
    return dataset


def has_cached_features(dataset) -> bool:
    """Whether the rows carry pre-computed `caption_embeds` (then no text encoder is needed)."""
    return "caption_embeds" in (dataset.column_names or [])


def train(script_args: T2IScriptArguments, training_args: VAPiConfig, model_args: ModelConfig):
    """Load the policy, tokenizers and data, train, save the policy and the model card; returns the trainer."""
    from trl import get_peft_config

    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForTextToImage
    from vapi_trl.models.llamagen.text_encoder import load_caption_encoder

    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: the policy folder written by `vapi-trl convert-llamagen`.")
    if script_args.image_tokenizer_path is None:
        raise ValueError("--image_tokenizer_path is required: the image_tokenizer folder of `convert-llamagen`.")
    image_tokenizer = ImageTokenizerProcessor.from_pretrained(script_args.image_tokenizer_path)
    model = LlamaGenForTextToImage.from_pretrained(
        model_args.model_name_or_path,
        dtype=policy_dtype(model_args),
        attn_implementation=model_args.attn_implementation,
    )
    dataset = load_t2i_dataset(
        dataset_name=script_args.dataset_name,
        tar_shards=script_args.tar_shards,
        split=script_args.dataset_train_split,
        image_column=script_args.image_column,
        caption_column=script_args.caption_column,
        config_name=script_args.dataset_config,
        streaming=script_args.dataset_streaming,
        num_samples=script_args.num_train_samples,
        shuffle_seed=script_args.shuffle_seed,
        verify_images=script_args.verify_images,
    )
    text_encoder = None
    if not has_cached_features(dataset):
        text_encoder = load_caption_encoder(
            script_args.text_encoder_name_or_path, model.config.cls_token_num, script_args.text_encoder_dtype
        )
    return run_training(
        model,
        image_tokenizer,
        dataset,
        training_args,
        peft_config=get_peft_config(model_args),
        processing_class=text_encoder,
        dataset_name=script_args.dataset_name or script_args.tar_shards,
    )


def main(args: list[str] | None = None) -> int:
    """Entry point of the subcommand and of the example script: the arguments (after `train-t2i`), or `None` for
    `sys.argv[1:]`."""
    return run_train_command(args, make_parser(prog="vapi-trl train-t2i"), train)


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "T2IScriptArguments",
    "T2I_RECIPE_DEFAULTS",
    "has_cached_features",
    "load_t2i_dataset",
    "main",
    "make_parser",
]
