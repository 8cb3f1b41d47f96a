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

from vapi_trl.commands._common import make_train_parser, policy_dtype, run_train_command, run_training
from vapi_trl.config import VAPiConfig

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
class C2IScriptArguments(ScriptArguments):
    """
    Data and model options of `train_llamagen_c2i.py`, on top of TRL's `ScriptArguments` (`dataset_name`,
    `dataset_config`, `dataset_train_split`, `dataset_streaming`).

    Parameters:
        image_tokenizer_path (`str`):
            `ImageTokenizerProcessor` folder of the policy's VQ (`convert-llamagen` writes `OUTPUT_DIR/image_tokenizer`).
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

    image_tokenizer_path: str | None = field(
        default=None,
        metadata={
            "help": "ImageTokenizerProcessor folder of the policy's VQ (OUTPUT_DIR/image_tokenizer from convert)."
        },
    )
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


def select_per_class(dataset, images_per_class: int, seed: int = 0, column: str = "class_label"):
    """The rows of `images_per_class` random images of each class (all of a smaller class), in dataset order."""
    import numpy as np

    labels = np.asarray(dataset[column])
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        keep.append(rng.permutation(indices)[:images_per_class])
    return dataset.select(np.sort(np.concatenate(keep)).tolist())


def load_c2i_dataset(
    train_dir: str | None = None,
    dataset_name: str | None = None,
    split: str = "train",
    image_column: str = "image",
    label_column: str | None = None,
    config_name: str | None = None,
    images_per_class: int | None = None,
    subset_seed: int = 0,
    verify_images: bool = True,
):
    """
    Class-to-image training rows (`image`, `class_label`, and `gt_ids` when present) from an ImageNet-style folder or a
    `datasets` dataset, optionally `images_per_class` per class; undecodable images are dropped with a report.
    """
    from vapi_trl.data import check_class_labels, drop_undecodable_images, load_image_dataset

    if (train_dir is None) == (dataset_name is None):
        raise ValueError("Give exactly one of --train_dir (ImageNet-style folder) and --dataset_name.")
    if train_dir is not None:
        # imagefolder labels are `ClassLabel(names=sorted(folder names))`: ImageNet wnids -> the standard ids.
        source, kwargs = "imagefolder", {"data_dir": train_dir, "label_column": "label"}
    else:
        if label_column is None:
            label_column = _default_label_column(dataset_name, split)
        source, kwargs = dataset_name, {"label_column": label_column, "config_name": config_name}
    dataset = load_image_dataset(
        source, split=split, image_column=image_column, caption_column=None, verify_images=False, **kwargs
    )
    check_class_labels(dataset, name=repr(train_dir or dataset_name))  # before select_per_class groups by label
    if images_per_class is not None:
        dataset = select_per_class(dataset, images_per_class, seed=subset_seed)
    if verify_images:
        dataset, _ = drop_undecodable_images(dataset, "class_label", train_dir or dataset_name)
    return dataset


def _default_label_column(dataset_name: str, split: str) -> str:
    """`label`, or `class_label` for a `save_to_disk` folder with that column and no `label` (`vapi-trl tokenize`)."""
    import os

    if os.path.isdir(dataset_name):
        from datasets import DatasetDict, load_from_disk

        try:
            saved = load_from_disk(dataset_name)
        except (FileNotFoundError, ValueError):
            return "label"
        if isinstance(saved, DatasetDict):
            saved = saved[split] if split in saved else next(iter(saved.values()))
        if "class_label" in saved.column_names and "label" not in saved.column_names:
            return "class_label"
    return "label"


def load_c2i_dataset_from_args(script_args: C2IScriptArguments):
    """`load_c2i_dataset` with the data options of `script_args` (`C2IScriptArguments`)."""
    return load_c2i_dataset(
        train_dir=script_args.train_dir,
        dataset_name=script_args.dataset_name,
        split=script_args.dataset_train_split,
        image_column=script_args.image_column,
        label_column=script_args.label_column,
        config_name=script_args.dataset_config,
        images_per_class=script_args.images_per_class,
        subset_seed=script_args.subset_seed,
        verify_images=script_args.verify_images,
    )


def train(script_args: C2IScriptArguments, training_args: VAPiConfig, model_args: ModelConfig):
    """Load the policy, tokenizer and data, train, save the policy and the model card; returns the trainer."""
    from trl import get_peft_config

    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage

    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: the policy folder written by `vapi-trl convert-llamagen`.")
    if script_args.image_tokenizer_path is None:
        raise ValueError("--image_tokenizer_path is required: the image_tokenizer folder of `convert-llamagen`.")
    image_tokenizer = ImageTokenizerProcessor.from_pretrained(script_args.image_tokenizer_path)
    model = LlamaGenForClassToImage.from_pretrained(
        model_args.model_name_or_path,
        dtype=policy_dtype(model_args),
        attn_implementation=model_args.attn_implementation,
    )
    return run_training(
        model,
        image_tokenizer,
        load_c2i_dataset_from_args(script_args),
        training_args,
        peft_config=get_peft_config(model_args),
        dataset_name=script_args.dataset_name or script_args.train_dir,
    )


def main(args: list[str] | None = None) -> int:
    """Entry point of the subcommand and of the example script: the arguments (after `train-c2i`), or `None` for
    `sys.argv[1:]`."""
    return run_train_command(args, make_parser(prog="vapi-trl train-c2i"), train)


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "C2IScriptArguments",
    "C2I_RECIPE_DEFAULTS",
    "load_c2i_dataset",
    "load_c2i_dataset_from_args",
    "main",
    "make_parser",
    "select_per_class",
]
