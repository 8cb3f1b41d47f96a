"""Launched by tests/test_distributed.py under `accelerate launch --num_processes 2 --cpu`.

Trains the tiny LlamaGen policy for a few steps, then each rank writes what it saw (the image groups it scored) and a
fingerprint of its parameters to OUTPUT_DIR/rank{r}.json.
"""

import json
import os
import sys

import torch


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.conftest import make_image_dataset, tiny_llamagen_config, tiny_vq_config  # noqa: E402
from vapi_trl import VAPiConfig, VAPiTrainer  # noqa: E402
from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage  # noqa: E402


def main(output_dir: str) -> None:
    torch.manual_seed(0)
    image_tokenizer = ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32)
    torch.manual_seed(0)
    policy = LlamaGenForClassToImage(tiny_llamagen_config(num_classes=16))
    dataset = make_image_dataset(num_images=16, num_classes=16)  # class_label = image index: identifies the image
    args = VAPiConfig(
        output_dir=output_dir, per_device_train_batch_size=4, num_generations=2, max_steps=3, learning_rate=1e-2,
        bf16=False, report_to="none", save_strategy="no", lpips_net="alex", lpips_random_backbone=True, seed=0,
        use_cpu=True,
    )  # fmt: skip
    trainer = VAPiTrainer(model=policy, args=args, train_dataset=dataset, image_tokenizer=image_tokenizer)

    groups = []
    generate = trainer._generate_and_score_completions

    def recording(inputs):
        labels = [row["class_label"] for row in inputs]
        groups.append([labels[i : i + args.num_generations] for i in range(0, len(labels), args.num_generations)])
        return generate(inputs)

    trainer._generate_and_score_completions = recording
    trainer.train()
    trainer.save_model(os.path.join(output_dir, "final"))

    rank = trainer.accelerator.process_index
    params = {
        name: param.detach().double()
        for name, param in trainer.accelerator.unwrap_model(trainer.model).named_parameters()
    }
    record = {
        "world_size": trainer.accelerator.num_processes,
        "groups": groups,
        "param_sums": {name: value.sum().item() for name, value in params.items()},
        "param_abs_sums": {name: value.abs().sum().item() for name, value in params.items()},
        "loss": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    }
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1])
