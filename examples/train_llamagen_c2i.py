# Copyright 2025 The vapi-trl authors. Licensed under the Apache License, Version 2.0.
"""
VA-π post-training of LlamaGen class-to-image (ImageNet) with `VAPiTrainer`: a thin wrapper around
`vapi_trl.commands.train_c2i` (the same code as `vapi-trl train-c2i`); see its docstring for the recipe and the data.

```bash
accelerate launch --config_file fsdp.yaml examples/train_llamagen_c2i.py \
    --model_name_or_path llamagen-xxl/policy --image_tokenizer_path llamagen-xxl/image_tokenizer \
    --train_dir imagenet/train --images_per_class 13 --learning_rate 1e-6 --output_dir llamagen-xxl-va-pi
```

Runs unchanged under `python` and `accelerate launch`. `--use_peft` trains LoRA adapters (`lora_task_type` None).
"""

import sys

from vapi_trl.commands.script_help import exit_if_help_requested


if __name__ == "__main__":
    exit_if_help_requested("train-c2i")  # --help from the committed parser spec, before torch and TRL load (~7 s)
    from vapi_trl.commands.train_c2i import main

    sys.exit(main())
