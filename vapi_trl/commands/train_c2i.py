"""
`vapi-trl train-c2i` (and `examples/train_llamagen_c2i.py`): VA-π post-training of a converted LlamaGen C2I policy.

Defaults follow the official C2I launcher (algorithm.md §3): G = 8 samples per image, context noise ξ = 0.0 (the
launcher omits `--use-token-noise`; the paper recommends 0.5, set `--context_noise_prob 0.5`), reward −(MSE +
LPIPS-VGG), CE prior 0.1, clip 0.2, no CFG, the loss forward in train mode (the model's dropout 0.1 and 10% label
dropout; sampling in eval mode), AdamW betas (0.9, 0.999) with weight decay 1e-4 (transformers exempts
biases and norm weights, as the official run), grad-norm clip 1.0, constant LR, 100 steps, bf16 autocast over fp32
master weights. One micro-batch is one image × G rows (`per_device_train_batch_size 8`); the recipe's 128 images per
step are 8 GPUs × GA 16. The learning rate has no default: the recipe uses **1e-6**.

```bash
vapi-trl convert-llamagen --gpt_ckpt c2i_XXL_384.pt --vq_ckpt vq_ds16_c2i.pt --gpt_model GPT-XXL --image_size 384 \
    --output_dir llamagen-xxl
vapi-trl tokenize --image_tokenizer_path llamagen-xxl/image_tokenizer --train_dir imagenet/train \
    --images_per_class 13 --output_dir imagenet-13pc-tokens          # optional: pre-extract x* once
accelerate launch --config_file fsdp.yaml examples/train_llamagen_c2i.py \
    --model_name_or_path llamagen-xxl/policy --image_tokenizer_path llamagen-xxl/image_tokenizer \
    --dataset_name imagenet-13pc-tokens --learning_rate 1e-6 --output_dir llamagen-xxl-va-pi
```

Data: `--train_dir` is an ImageNet-style folder (`<train_dir>/<wnid>/*.JPEG`), read with the `datasets` `imagefolder`
builder; its labels are the sorted folder names, i.e. the standard ImageNet ids of torchvision's `ImageFolder`
(n01440764 -> 0 ...). Or `--dataset_name`: a Hub id, a local dataset folder or a `save_to_disk` folder (as written by
`vapi-trl tokenize`), with `--image_column` / `--label_column`. `--images_per_class K` keeps K random images per class
(seeded by `--subset_seed`); the paper's run sees 12.8K images (13 per class covers it).

The same code runs under `python`, `vapi-trl train-c2i` and `accelerate launch` (multi-GPU: launch this file or
`-m vapi_trl.cli train-c2i`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments

from vapi_trl.commands._common import load_image_tokenizer, load_policy, make_train_parser
from vapi_trl.commands._common import run_training, train_command_main
from vapi_trl.config import VAPiConfig

# What `--model_name_or_path` names, for the error when it is missing.
POLICY_SOURCE = "the policy folder written by `vapi-trl convert-llamagen`"

# C2I recipe (algorithm.md §3) over VAPiConfig's defaults; `learning_rate` stays required (1e-6 in the recipe).
C2I_RECIPE_DEFAULTS = {
    "num_generations": 8,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 16,
    "max_steps": 100,
    "context_noise_prob": 0.0,
    "loss_forward_mode": "train",  # official launchers: dropout 0.1 and 10% label dropout in the loss forward
    "lpips_net": "vgg",
    "pixel_loss": "mse",
    "cfg_scale": 1.0,
    "ce_coef": 0.1,
    "epsilon": 0.2,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "weight_decay": 1e-4,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "max_grad_norm": 1.0,
    # bf16 autocast where the accelerator supports it (VAPiConfig's `None`), fp32 elsewhere (CPU, pre-Ampere GPUs)
    # instead of transformers' "bf16 requires ..." error; `--bf16 true` still insists.
    "bf16": None,
    "ddp_find_unused_parameters": False,
    "save_strategy": "no",
    "output_dir": "llamagen-c2i-va-pi",
}


@dataclass
class ImageTokenizerScriptArguments(ScriptArguments):
    """
    The option of every LlamaGen/VAR training script on top of TRL's `ScriptArguments` (`dataset_name`,
    `dataset_config`, `dataset_train_split`, `dataset_streaming`).

    Parameters:
        image_tokenizer_path (`str`):
            `ImageTokenizerProcessor` folder of the policy's VQ (`convert-llamagen` writes `OUTPUT_DIR/image_tokenizer`).
    """

    image_tokenizer_path: str | None = field(
        default=None,
        metadata={
            "help": "ImageTokenizerProcessor folder of the policy's VQ (OUTPUT_DIR/image_tokenizer from convert)."
        },
    )


@dataclass
class C2IScriptArguments(ImageTokenizerScriptArguments):
    """
    Data options of `train_llamagen_c2i.py`, on top of `ImageTokenizerScriptArguments` (`image_tokenizer_path` and
    TRL's `ScriptArguments`).

    Parameters:
        train_dir (`str`, *optional*):
            ImageNet-style folder `<train_dir>/<wnid>/*.JPEG`; labels are the sorted folder names.
        image_column (`str`, *optional*, defaults to `"image"`):
            Image column of `--dataset_name`.
        label_column (`str`, *optional*):
            Class column of `--dataset_name`; default `label`, or `class_label` for a dataset that has that column and
            no `label` (as `vapi-trl tokenize` writes). A column given explicitly is always the one used.
        images_per_class (`int`, *optional*):
            Keep this many random images per class (all when unset).
        subset_seed (`int`, *optional*, defaults to `0`):
            Seed of the per-class selection.
        verify_images (`bool`, *optional*, defaults to `True`):
            Decode every selected image once and drop (with a log record) those that fail.
    """

    train_dir: str | None = field(
        default=None,
        metadata={"help": "ImageNet-style folder <train_dir>/<wnid>/*.JPEG (labels: sorted folder names)."},
    )
    image_column: str = field(default="image", metadata={"help": "Image column of --dataset_name."})
    label_column: str | None = field(
        default=None,
        metadata={"help": "Class column of --dataset_name (default: label, or class_label when only that exists)."},
    )
    images_per_class: int | None = field(
        default=None, metadata={"help": "Keep this many random images per class (paper: ~13 covers 12.8K images)."}
    )
    subset_seed: int = field(default=0, metadata={"help": "Seed of the per-class subset selection."})
    verify_images: bool = field(
        default=True, metadata={"help": "Decode every selected image once and drop those that fail."}
    )


def make_parser(subparsers=None, name: str = "train-c2i", help: str = "", prog: str | None = None):
    """
    The `TrlParser` of the script, with the C2I recipe defaults. With `subparsers`, registers the bare subcommand
    instead, as `trl <command>` does (`vapi-trl` hands the arguments after the command name to `main(argv)`).
    """
    return make_train_parser(subparsers, name, help, prog, C2IScriptArguments, C2I_RECIPE_DEFAULTS)


def load_c2i_dataset_from_args(script_args: C2IScriptArguments):
    """`vapi_trl.data.load_c2i_dataset` with the data options of `script_args` (`C2IScriptArguments`)."""
    from vapi_trl.data import load_c2i_dataset

    # The options named as `load_c2i_dataset`'s parameters; TRL's split and config options are renamed.
    same = ("train_dir", "dataset_name", "image_column", "label_column", "images_per_class", "subset_seed")
    return load_c2i_dataset(
        split=script_args.dataset_train_split,
        config_name=script_args.dataset_config,
        verify_images=script_args.verify_images,
        **{name: getattr(script_args, name) for name in same},
    )


def train(script_args: C2IScriptArguments, training_args: VAPiConfig, model_args: ModelConfig):
    """Load the policy, tokenizer and data, train, save the policy and the model card; returns the trainer."""
    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage, LlamaGenProcessor

    image_tokenizer = load_image_tokenizer(
        ImageTokenizerProcessor, script_args.image_tokenizer_path, "convert-llamagen"
    )
    model = load_policy(LlamaGenForClassToImage, model_args, POLICY_SOURCE)
    processor = LlamaGenProcessor.from_policy(model, image_tokenizer)
    dataset, name = load_c2i_dataset_from_args(script_args), script_args.dataset_name or script_args.train_dir
    return run_training(model, processor, dataset, training_args, model_args, dataset_name=name)


main = train_command_main("train-c2i", make_parser, train)


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "C2IScriptArguments",
    "ImageTokenizerScriptArguments",
    "C2I_RECIPE_DEFAULTS",
    "load_c2i_dataset_from_args",
    "main",
    "make_parser",
]
