# Copyright 2025 The vapi-trl authors. Licensed under the Apache License, Version 2.0.
"""
VA-π post-training of LlamaGen text-to-image with `VAPiTrainer`: a thin wrapper around `vapi_trl.commands.train_t2i`
(the same code as `vapi-trl train-t2i`); see its docstring for the recipe (ξ = 0.5, G = 8, LPIPS-VGG, 200 steps) and
the data. The learning rate must be given: the recipe uses **1e-6**.

```bash
vapi-trl convert-llamagen --gpt_ckpt t2i_XL_stage1_256.pt --vq_ckpt vq_ds16_t2i.pt --gpt_model GPT-XL \
    --image_size 256 --output_dir llamagen-t2i-xl
accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/train_llamagen_t2i.py \
    --model_name_or_path llamagen-t2i-xl/policy --image_tokenizer_path llamagen-t2i-xl/image_tokenizer \
    --tar_shards data/shards --text_encoder_name_or_path google/flan-t5-xl \
    --learning_rate 1e-6 --output_dir llamagen-t2i-xl-va-pi
```

Runs unchanged under `python` and `accelerate launch`; `--dataset_streaming` streams the shards. `--use_peft` trains
LoRA adapters (`lora_task_type` None).
"""

import sys

from vapi_trl.commands.script_help import exit_if_help_requested


if __name__ == "__main__":
    exit_if_help_requested("train-t2i")  # --help from the committed parser spec, before torch and TRL load (~7 s)
    from vapi_trl.commands.train_t2i import main

    sys.exit(main())
