# Copyright 2025 The vapi-trl authors. Licensed under the Apache License, Version 2.0.
"""
VA-π post-training of VAR class-to-image (next-scale prediction, ImageNet 256²) with `VAPiTrainer`.

The policy's teacher-forced pass is VAR's training forward on the (noisy) multi-scale context; drawing every one of the
680 positions of that pass is VAR's own sampler with the ground-truth prefix. Data loading and the recipe defaults are
those of `vapi-trl train-c2i` (`vapi_trl.commands.train_c2i`: G = 8, CE 0.1, clip 0.2, MSE + LPIPS-VGG, no CFG, bf16
autocast); the learning rate has no default.

```bash
vapi-trl convert-var --vae-ckpt vae_ch160v4096z32.pth --var-ckpt var_d16.pth --out var-d16
accelerate launch --config_file single_gpu.yaml examples/train_var_c2i.py \
    --model_name_or_path var-d16/policy --image_tokenizer_path var-d16/image_tokenizer \
    --train_dir imagenet/train --images_per_class 13 --learning_rate 1e-6 --context_noise_prob 0.5 \
    --output_dir var-d16-va-pi
```

`--dataset_name` (a Hub id, dataset folder or `save_to_disk` folder with `image` and `label`/`class_label`) replaces
`--train_dir`; `--use_peft` trains LoRA adapters (`lora_task_type` None; target e.g. `mat_qkv proj fc1 fc2`).
"""

import sys

from trl import ModelConfig, TrlParser

from vapi_trl.commands.train_c2i import C2I_RECIPE_DEFAULTS, C2IScriptArguments, load_c2i_dataset
from vapi_trl.config import VAPiConfig


def make_parser(prog: str | None = None) -> TrlParser:
    """`TrlParser((C2IScriptArguments, VAPiConfig, ModelConfig))` with the C2I recipe defaults."""
    parser = TrlParser((C2IScriptArguments, VAPiConfig, ModelConfig), prog=prog)
    parser.set_defaults(lora_task_type=None, **{**C2I_RECIPE_DEFAULTS, "output_dir": "var-c2i-va-pi"})
    return parser


def train(script_args: C2IScriptArguments, training_args: VAPiConfig, model_args: ModelConfig):
    """Load the VAR policy, its tokenizer and the data, train, save the policy and the model card."""
    import torch
    from trl import get_peft_config

    from vapi_trl import VAPiTrainer
    from vapi_trl.models import VARForClassToImage, VARImageTokenizerProcessor

    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: the policy folder written by `vapi-trl convert-var`.")
    if script_args.image_tokenizer_path is None:
        raise ValueError("--image_tokenizer_path is required: the image_tokenizer folder of `vapi-trl convert-var`.")
    image_tokenizer = VARImageTokenizerProcessor.from_pretrained(script_args.image_tokenizer_path)
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    model = VARForClassToImage.from_pretrained(model_args.model_name_or_path, dtype=dtype)
    dataset = load_c2i_dataset(
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
    trainer = VAPiTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        image_tokenizer=image_tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    dataset_name = script_args.dataset_name or script_args.train_dir
    trainer.create_model_card(dataset_name=dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
    return trainer


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default `sys.argv[1:]`, `--config recipe.yaml` allowed) and train."""
    parser = make_parser(prog="train_var_c2i.py")
    script_args, training_args, model_args = parser.parse_args_and_config(sys.argv[1:] if argv is None else list(argv))
    train(script_args, training_args, model_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main", "make_parser", "train"]
