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

import sys
from dataclasses import dataclass, field

from trl import ModelConfig

from vapi_trl.commands._common import load_image_tokenizer, load_policy, make_train_parser
from vapi_trl.commands._common import run_training, train_command_main
from vapi_trl.commands.train_c2i import C2I_RECIPE_DEFAULTS, POLICY_SOURCE, ImageTokenizerScriptArguments
from vapi_trl.config import VAPiConfig

# T2I recipe (algorithm.md §3): the C2I recipe with 200 steps and ξ = 0.5; `learning_rate` stays required (1e-6).
T2I_RECIPE_DEFAULTS = {
    **C2I_RECIPE_DEFAULTS,
    "max_steps": 200,
    "context_noise_prob": 0.5,
    "output_dir": "llamagen-t2i-va-pi",
}


@dataclass
class T2IScriptArguments(ImageTokenizerScriptArguments):
    """
    Data and text-encoder options of `train_llamagen_t2i.py`, on top of `ImageTokenizerScriptArguments`
    (`image_tokenizer_path` and TRL's `ScriptArguments`).

    Parameters:
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


def train(script_args: T2IScriptArguments, training_args: VAPiConfig, model_args: ModelConfig):
    """Load the policy, tokenizers and data, train, save the policy and the model card; returns the trainer."""
    from vapi_trl.data import has_cached_features, load_t2i_dataset
    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForTextToImage, LlamaGenProcessor
    from vapi_trl.models.llamagen.text_encoder import load_caption_encoder

    image_tokenizer = load_image_tokenizer(
        ImageTokenizerProcessor, script_args.image_tokenizer_path, "convert-llamagen"
    )
    model = load_policy(LlamaGenForTextToImage, model_args, POLICY_SOURCE)
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
    processor = LlamaGenProcessor.from_policy(model, image_tokenizer, text_processor=text_encoder)
    name = script_args.dataset_name or script_args.tar_shards
    return run_training(model, processor, dataset, training_args, model_args, dataset_name=name)


main = train_command_main("train-t2i", make_parser, train)


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "T2IScriptArguments",
    "T2I_RECIPE_DEFAULTS",
    "main",
    "make_parser",
]
