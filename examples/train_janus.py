# Copyright 2025 The vapi-trl authors. Licensed under the Apache License, Version 2.0.
"""
VA-π post-training of Janus-Pro (text-to-image) with `VAPiTrainer`.

Defaults follow the official Janus-Pro recipe (design notes, algorithm.md §3): G = 8 samples per image, context noise
ξ = 1.0, reward −(MSE + LPIPS-AlexNet), CE prior 0.1, clip 0.2, no CFG in training (`cfg_scale` 1.0), AdamW betas
(0.9, 0.999) with weight decay 1e-4, grad-norm clip 1.0, constant LR, 100 steps, bf16 autocast over fp32 master
weights, gradient checkpointing. The learning rate has no default: the recipe uses **1e-7** (pass it explicitly).
One micro-batch is one image × G rows (`per_device_train_batch_size 8`); the recipe's 64 images per step are
8 GPUs × GA 8 (or GA 64 on one GPU).

Real model (8 GPUs, ZeRO-3 as the official run; the dataset needs an image and a caption column):

```bash
accelerate launch --config_file examples/accelerate_configs/deepspeed_zero3.yaml examples/train_janus.py \
    --model_name_or_path deepseek-community/Janus-Pro-1B \
    --dataset_name path/or/hub-id/of/FLUX-Reason-6M --caption_column caption_original --num_train_samples 50000 \
    --learning_rate 1e-7 --output_dir Janus-Pro-1B-VA-pi --push_to_hub
```

Single GPU: `--config_file examples/accelerate_configs/single_gpu.yaml --gradient_accumulation_steps 64`, or plain
`python examples/train_janus.py ...`. The script runs unchanged under `python` and `accelerate launch`.

LoRA (`--use_peft`): adapters on the language model's attention and MLP projections only
(`model.language_model.layers.*.{q,k,v,o,gate,up,down}_proj`), never on the SigLIP understanding tower (whose attention
also has `q_proj`/`k_proj`/`v_proj`), the VQ or the heads. Pass `--lora_target_modules` to override and
`--lora_modules_to_save generation_head` to also train the image head fully.

Frozen modules: the image tokenizer copy (the Janus VQ, with l2-normalised codebook) and LPIPS are trainer attributes,
never prepared by accelerate, so every rank holds them whole under DDP, ZeRO and FSDP. They are loaded before anything
is partitioned (ZeRO-3 init is disabled for them).

`--dump_parameter_checksums` writes `_parameter_checksum_rank{R}.json` (SHA-256 of every trainable parameter, per rank)
to `output_dir` after training: identical files across ranks show that the replicas stayed in sync. Files starting with
`_` are not pushed to the Hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field

from vapi_trl.commands.script_help import exit_if_help_requested


if __name__ == "__main__":
    exit_if_help_requested("train_janus.py", prog=os.path.basename(sys.argv[0]))  # --help before torch and TRL load

from trl import ModelConfig, ScriptArguments, TrlParser

from vapi_trl import VAPiConfig

# LoRA targets when `--lora_target_modules` is not given: a full-match regex over module names, so that only the
# language model's projections are adapted (the SigLIP tower also has `q_proj`/`k_proj`/`v_proj`).
JANUS_LORA_TARGET_REGEX = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"

# Janus-Pro recipe (algorithm.md §3) on top of VAPiConfig's own defaults; `learning_rate` stays required (1e-7).
JANUS_RECIPE_DEFAULTS = {
    "num_generations": 8,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 8,
    "max_steps": 100,
    "context_noise_prob": 1.0,
    "lpips_net": "alex",
    "cfg_scale": 1.0,
    "ce_coef": 0.1,
    "epsilon": 0.2,
    "weight_decay": 1e-4,
    "max_grad_norm": 1.0,
    "gradient_checkpointing": True,
    "bf16": True,
    "ddp_find_unused_parameters": False,
    "save_strategy": "no",
    "output_dir": "Janus-Pro-1B-VA-pi",
}


@dataclass
class JanusScriptArguments(ScriptArguments):
    """
    Data and run options of `train_janus.py`, on top of TRL's `ScriptArguments` (`dataset_name`, `dataset_config`,
    `dataset_train_split`, `dataset_streaming`).
    """

    image_column: str = field(default="image", metadata={"help": "Dataset column holding the training images."})
    caption_column: str = field(
        default="prompt",
        metadata={"help": "Dataset column holding the captions (FLUX-Reason-6M recipe: caption_original)."},
    )
    num_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N rows (recipe: 50000). None uses all."}
    )
    shuffle_seed: int | None = field(
        default=None, metadata={"help": "Shuffle the dataset with this seed before taking the subset."}
    )
    verify_images: bool = field(
        default=True,
        metadata={"help": "Decode every image once and drop (and log) those that fail, before training."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Janus tokenizer; defaults to --model_name_or_path."}
    )
    dump_parameter_checksums: bool = field(
        default=False,
        metadata={"help": "After training, write the SHA-256 of the trainable parameters per rank to output_dir."},
    )


def make_parser(subparsers=None, prog: str | None = None) -> TrlParser:
    """The `TrlParser` of this script (a subcommand parser when `subparsers` is given), with Janus recipe defaults."""
    dataclass_types = (JanusScriptArguments, VAPiConfig, ModelConfig)
    if subparsers is not None:
        parser = subparsers.add_parser(
            "train-janus", help="VA-π post-training of Janus-Pro.", dataclass_types=dataclass_types
        )
    else:
        parser = TrlParser(dataclass_types, prog=prog)
    parser.set_defaults(
        lora_task_type=None,  # a plain PeftModel forwards the policy's own kwargs (no CAUSAL_LM generation wrapper)
        model_name_or_path="deepseek-community/Janus-Pro-1B",
        **JANUS_RECIPE_DEFAULTS,
    )
    return parser


def parameter_checksum(model) -> dict[str, str]:
    """SHA-256 of each trainable parameter (fp32 bytes, on CPU) of the unwrapped `model`, plus one over all of them."""
    digests = {}
    total = hashlib.sha256()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        data = parameter.detach().float().cpu().contiguous().numpy().tobytes()
        digests[name] = hashlib.sha256(data).hexdigest()
        total.update(name.encode())
        total.update(data)
    return {"all": total.hexdigest(), **digests}


def main(script_args: JanusScriptArguments, training_args: VAPiConfig, model_args: ModelConfig) -> None:
    from transformers import AutoTokenizer
    from trl import get_peft_config

    from vapi_trl.commands._common import load_policy, run_training
    from vapi_trl.data import load_image_dataset
    from vapi_trl.models import (
        JanusForImageGeneration,
        JanusImageGenerationProcessor,
        janus_image_tokenizer_from_pretrained,
    )

    if script_args.dataset_name is None:
        raise ValueError("--dataset_name is required: a Hub id or a local folder with image and caption columns.")
    model_id = model_args.model_name_or_path
    hub_kwargs = {"revision": model_args.model_revision}

    # Frozen image tokenizer first, outside any ZeRO-3 partitioning: every rank keeps a whole copy of the Janus VQ.
    plugin = getattr(training_args, "deepspeed_plugin", None)
    no_zero_init = plugin.zero3_init_context_manager(enable=False) if plugin is not None else contextlib.nullcontext()
    with no_zero_init:
        image_tokenizer = janus_image_tokenizer_from_pretrained(model_id, revision=model_args.model_revision)

    # fp32 master weights by default (bf16 weights cannot hold lr-1e-7 updates); autocast comes from --bf16.
    model = load_policy(
        JanusForImageGeneration, model_args, "a transformers-format Janus(-Pro) checkpoint", **hub_kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(script_args.tokenizer_name_or_path or model_id, **hub_kwargs)
    # The trainer records the special ids in the policy's generation_config once (`prepare_policy`).
    processor = JanusImageGenerationProcessor(tokenizer, image_tokenizer=image_tokenizer)

    peft_config = get_peft_config(model_args)
    if peft_config is not None and model_args.lora_target_modules is None:
        peft_config.target_modules = JANUS_LORA_TARGET_REGEX

    dataset = load_image_dataset(
        script_args.dataset_name,
        split=script_args.dataset_train_split,
        image_column=script_args.image_column,
        caption_column=script_args.caption_column,
        config_name=script_args.dataset_config,
        streaming=script_args.dataset_streaming,
        num_samples=script_args.num_train_samples,
        shuffle_seed=script_args.shuffle_seed,
        verify_images=script_args.verify_images,
    )

    def dump_parameter_checksums(trainer) -> None:
        checksum = parameter_checksum(trainer.accelerator.unwrap_model(trainer.model))
        os.makedirs(training_args.output_dir, exist_ok=True)
        path = os.path.join(
            training_args.output_dir, f"_parameter_checksum_rank{trainer.accelerator.process_index}.json"
        )
        with open(path, "w") as handle:
            json.dump(checksum, handle, indent=1)

    run_training(
        model,
        processor,
        dataset,
        training_args,
        peft_config=peft_config,
        dataset_name=script_args.dataset_name,
        after_train=dump_parameter_checksums if script_args.dump_parameter_checksums else None,
    )


if __name__ == "__main__":
    from vapi_trl.commands._common import parse_train_args

    script_args, training_args, model_args = parse_train_args(make_parser())
    main(script_args, training_args, model_args)
