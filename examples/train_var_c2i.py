# Copyright 2025 The vapi-trl authors. Licensed under the Apache License, Version 2.0.
"""
VA-π post-training of VAR class-to-image (next-scale prediction, ImageNet 256²) with `VAPiTrainer`.

The policy's teacher-forced pass is VAR's training forward on the (noisy) multi-scale context; drawing every one of the
680 positions of that pass is VAR's own sampler with the ground-truth prefix. Data loading and the recipe defaults are
those of `vapi-trl train-c2i` (`vapi_trl.commands.train_c2i`: G = 8, CE 0.1, clip 0.2, MSE + LPIPS-VGG, no CFG, bf16
autocast); the learning rate has no default.

```bash
vapi-trl convert-var --vae_ckpt vae_ch160v4096z32.pth --var_ckpt var_d16.pth --output_dir var-d16
accelerate launch --config_file single_gpu.yaml examples/train_var_c2i.py \
    --model_name_or_path var-d16/policy --image_tokenizer_path var-d16/image_tokenizer \
    --train_dir imagenet/train --images_per_class 13 --learning_rate 1e-6 --context_noise_prob 0.5 \
    --output_dir var-d16-va-pi
```

`--dataset_name` (a Hub id, dataset folder or `save_to_disk` folder with `image` and `label`/`class_label`) replaces
`--train_dir`; `--use_peft` trains LoRA adapters (`lora_task_type` None; target e.g. `mat_qkv proj fc1 fc2`).
"""

import sys

from vapi_trl.commands.script_help import exit_if_help_requested


if __name__ == "__main__":
    exit_if_help_requested("train_var_c2i.py")  # --help from the committed parser spec, before torch and TRL load

from trl import ModelConfig, TrlParser

from vapi_trl.commands._common import make_train_parser, run_train_command
from vapi_trl.commands.train_c2i import C2I_RECIPE_DEFAULTS, C2IScriptArguments, load_c2i_dataset_from_args
from vapi_trl.config import VAPiConfig


def make_parser(prog: str | None = None) -> TrlParser:
    """`TrlParser((C2IScriptArguments, VAPiConfig, ModelConfig))` with the C2I recipe defaults."""
    defaults = {**C2I_RECIPE_DEFAULTS, "output_dir": "var-c2i-va-pi"}
    return make_train_parser(None, "train-var-c2i", "", prog, C2IScriptArguments, defaults)


def train(script_args: C2IScriptArguments, training_args: VAPiConfig, model_args: ModelConfig):
    """Load the VAR policy, its tokenizer and the data, train, save the policy and the model card."""
    from vapi_trl.commands._common import load_image_tokenizer, load_policy, run_training
    from vapi_trl.models import VARForClassToImage, VARImageTokenizerProcessor, VARProcessor

    image_tokenizer = load_image_tokenizer(VARImageTokenizerProcessor, script_args.image_tokenizer_path, "convert-var")
    model = load_policy(VARForClassToImage, model_args, "the policy folder written by `vapi-trl convert-var`")
    return run_training(
        model,
        VARProcessor.from_policy(model, image_tokenizer),
        load_c2i_dataset_from_args(script_args),
        training_args,
        model_args=model_args,
        dataset_name=script_args.dataset_name or script_args.train_dir,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default `sys.argv[1:]`, `--config recipe.yaml` allowed) and train."""
    return run_train_command(argv, make_parser(prog="train_var_c2i.py"), train)


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main", "make_parser", "train"]
