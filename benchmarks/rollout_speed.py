"""One VA-π training step against one free-running GRPO step: same policy, same U images, same G, same run.

- **VA-π** (vapi-trl): `VAPiTrainer._generate_and_score_completions` (one teacher-forced no-grad forward per image,
  G parallel draws per position, VQ decode of U·G sequences, pixel reward, group advantages), then
  `VAPiTrainer._compute_loss` and its backward (one forward+backward per image serves its G samples).
- **Free-running GRPO**: G KV-cache autoregressive rollouts per condition (`LlamaGenForClassToImage.sample`, τ = 1, no
  filters, no CFG), the same VQ decode and pixel reward against the same images, group advantages, then the GRPO
  loss pass: U·G teacher-forced forwards on the *sampled* sequences (each sequence is different, so nothing is shared),
  the clipped surrogate (`num_iterations = 1`: old log-probs = detached new ones) and the backward. No CE term: GRPO
  has none (VA-π's CE reuses its logits, so it adds no forward).

Configs: `tiny` is the shipped demo generator (0.8M parameters, 16 tokens, 32 px VQ); `GPT-B` is
`LlamaGenConfig.from_preset("GPT-B", block_size=256)` with random weights and a random VQ-16 at 256 px (256 image
tokens; timings do not depend on the weights). Reward −MSE (LPIPS costs the same in both arms and is left out). Wall
times are medians over `--repeats` after one warm-up. Example:

    python benchmarks/rollout_speed.py --json benchmarks/results/rollout_speed_cpu.json
"""

import argparse
import json
import os
import platform
import sys
import tempfile

import torch
from step_cost import timed  # same folder: the benchmarks share their timing rule


def build(config_name: str):
    """(policy, image_tokenizer, image_size) for `tiny` (shipped weights) or `GPT-B` (random, VQ-16 at 256 px)."""
    from transformers import JanusVQVAEConfig

    from vapi_trl.demo import embedded
    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenConfig, LlamaGenForClassToImage

    if config_name == "tiny":
        return embedded.load_policy(), embedded.load_image_tokenizer(), embedded.IMAGE_SIZE
    torch.manual_seed(0)
    vq_config = JanusVQVAEConfig(
        embed_dim=8, num_embeddings=16384, latent_channels=256, base_channels=128,
        channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2, num_patches=16,
    )  # fmt: skip
    processor = ImageTokenizerProcessor.from_vq_config(vq_config, image_size=256)
    policy = LlamaGenForClassToImage(LlamaGenConfig.from_preset("GPT-B", block_size=256, num_classes=1000))
    return policy, processor, 256


def measure(config_name: str, num_images: int, num_generations: int, repeats: int, device: torch.device) -> dict:
    from datasets import Dataset
    from PIL import Image

    from vapi_trl import VAPiConfig, VAPiTrainer
    from vapi_trl.objective import (
        clipped_surrogate,
        filtered_log_probs,
        gather_sample_log_probs,
        group_advantages,
        sample_groups,
    )

    U, G = num_images, num_generations
    policy, image_tokenizer, image_size = build(config_name)
    policy.to(device)
    num_classes = policy.config.num_classes
    torch.manual_seed(0)
    images = [Image.fromarray((torch.rand(image_size, image_size, 3) * 255).byte().numpy()) for _ in range(U)]
    labels = [u % num_classes for u in range(U)]
    dataset = Dataset.from_dict({"image": images, "class_label": labels})
    with tempfile.TemporaryDirectory() as output_dir:
        config = VAPiConfig(
            output_dir=output_dir, learning_rate=1e-6, per_device_train_batch_size=U * G, num_generations=G,
            bf16=False, report_to="none", lpips_weight=0.0, use_cpu=device.type == "cpu", context_noise_prob=0.5,
            decode_chunk_size=16,
        )  # fmt: skip
        trainer = VAPiTrainer(model=policy, args=config, train_dataset=dataset, image_tokenizer=image_tokenizer)
    model = trainer.model
    model.train()
    rows = [{"image": images[u], "class_label": labels[u]} for u in range(U) for _ in range(G)]
    target_pixels = image_tokenizer.preprocess(images).to(device)
    class_labels = torch.tensor(labels, device=device)
    figures: dict[str, float] = {}

    # ---- VA-π: the trainer's own step functions.
    def vapi_generate():
        with torch.no_grad():
            return trainer._generate_and_score_completions(rows)

    def vapi_loss(batch):
        model.zero_grad(set_to_none=True)
        loss = trainer._compute_loss(model, batch)
        loss.backward()
        return loss.detach()

    def vapi_policy_sampling():
        # The policy part of `_generate_and_score_completions`: one teacher-forced no-grad forward, G parallel draws.
        with torch.no_grad():
            logits = model(class_labels=class_labels, context_ids=batch["context_ids"]).logits
            return sample_groups(filtered_log_probs(logits), G)

    figures["vapi_generate_score_s"], batch = timed(vapi_generate, repeats)
    figures["vapi_sampling_forward_draw_s"], _ = timed(vapi_policy_sampling, repeats)
    figures["vapi_loss_fwd_bwd_s"], _ = timed(lambda: vapi_loss(batch), repeats)

    # ---- Free-running GRPO.
    rollout_labels = class_labels.repeat_interleave(G)

    def grpo_rollout():
        generator = torch.Generator(device=device).manual_seed(0)
        policy.eval()
        ids = policy.sample(rollout_labels, generator=generator)
        policy.train()
        return ids

    def grpo_decode_score(ids):
        with torch.no_grad():
            decoded = image_tokenizer.decode(ids).view(U, G, 3, image_size, image_size)
            rewards = trainer.pixel_reward(decoded, target_pixels).total
            return group_advantages(rewards)

    def grpo_loss(ids, advantages):
        model.zero_grad(set_to_none=True)
        logits = model(class_labels=rollout_labels, context_ids=ids[:, :-1]).logits
        new_logps = gather_sample_log_probs(filtered_log_probs(logits), ids[:, None, :])  # [U·G, 1, N]
        new_logps = new_logps.view(U, G, -1)
        loss, _ = clipped_surrogate(new_logps, new_logps.detach(), advantages)
        loss.backward()
        return loss.detach()

    figures["grpo_rollout_s"], ids = timed(grpo_rollout, repeats)
    figures["grpo_decode_score_s"], advantages = timed(lambda: grpo_decode_score(ids), repeats)
    figures["grpo_loss_fwd_bwd_s"], _ = timed(lambda: grpo_loss(ids, advantages), repeats)

    vapi_total = figures["vapi_generate_score_s"] + figures["vapi_loss_fwd_bwd_s"]
    grpo_total = figures["grpo_rollout_s"] + figures["grpo_decode_score_s"] + figures["grpo_loss_fwd_bwd_s"]
    # The policy-only part: what differs between the two (decode and reward are the same work in both).
    grpo_policy = figures["grpo_rollout_s"] + figures["grpo_loss_fwd_bwd_s"]
    vapi_policy = figures["vapi_sampling_forward_draw_s"] + figures["vapi_loss_fwd_bwd_s"]
    return {
        "config": config_name,
        "policy_parameters": sum(p.numel() for p in policy.parameters()),
        "num_image_tokens": policy.num_image_tokens,
        "codebook_size": policy.codebook_size,
        "image_size": image_size,
        "num_images": U,
        "num_generations": G,
        "seconds": figures,
        "vapi_step_s": vapi_total,
        "grpo_step_s": grpo_total,
        "grpo_over_vapi": grpo_total / vapi_total,
        "policy_part_grpo_s": grpo_policy,
        "policy_part_vapi_s": vapi_policy,
        "policy_part_grpo_over_vapi": grpo_policy / vapi_policy,
        "notes": "policy_part: the policy's share of a step, without the (shared) VQ decode and reward. GRPO: "
        "rollout + loss fwd/bwd; VA-π: teacher-forced sampling forward + draw + loss fwd/bwd.",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "GPT-B"], choices=["tiny", "GPT-B"])
    parser.add_argument(
        "--num-images", type=int, nargs="+", default=None, help="U per config (default: 8 for tiny, 1 for GPT-B)."
    )
    parser.add_argument("--num-generations", type=int, default=8, help="G: samples per image.")
    parser.add_argument(
        "--repeats",
        type=int,
        nargs="+",
        default=None,
        help="Timed repetitions per config (default: 3 for tiny, 1 for GPT-B).",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="Write the figures to this JSON file.")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    defaults = {"tiny": (8, 3), "GPT-B": (1, 1)}
    results = []
    for index, name in enumerate(args.configs):
        num_images = args.num_images[index] if args.num_images else defaults[name][0]
        repeats = args.repeats[index] if args.repeats else defaults[name][1]
        result = measure(name, num_images, args.num_generations, repeats, torch.device(args.device))
        result["repeats"] = repeats
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    report = {
        "results": results,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
