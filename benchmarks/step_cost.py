"""Time the parts of one VA-π training step, and the grouped vs naive loss pass, in the same run.

Parts: VQ encode, teacher-forced sampling forward (no grad), parallel draw of G samples, VQ decode of U·G sequences,
pixel reward (MSE + LPIPS), and the loss forward+backward. The loss pass is timed twice on the same batch:

- grouped (vapi-trl): one policy forward+backward per image serves its G samples (`VAPiTrainer._compute_loss`);
- naive (official trainer): each of the U·G rows runs its own forward with its own CE term, then one backward.

Weights are random (timings do not depend on them). LPIPS uses a random backbone unless its ImageNet weights are in the
torch cache (same cost either way). Example:

    python benchmarks/step_cost.py --model GPT-B --image-size 256 --num-images 2 --num-generations 8 --json out.json
    python benchmarks/step_cost.py --model tiny --json tiny.json
"""

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time

import torch
from datasets import Dataset
from PIL import Image

from vapi_trl import VAPiConfig, VAPiTrainer
from vapi_trl.dropout import dropout_disabled, eval_mode
from vapi_trl.models import ImageTokenizerProcessor, LlamaGenConfig, LlamaGenForClassToImage
from vapi_trl.objective import ce_prior, clipped_surrogate, corrupt_context, filtered_log_probs, sample_groups
from vapi_trl.rewards import lpips_backbone_path


def build_models(model: str, image_size: int, codebook_size: int | None):
    from transformers import JanusVQVAEConfig

    if model == "tiny":
        codebook_size = codebook_size or 64
        vq_config = JanusVQVAEConfig(
            embed_dim=8, num_embeddings=codebook_size, latent_channels=32, base_channels=32,
            channel_multiplier=[1, 1, 2, 2], num_res_blocks=1, projection_dim=32, image_token_embed_dim=32,
            num_hidden_layers=1, num_patches=image_size // 8,
        )  # fmt: skip
        grid = image_size // 8
        policy_config = LlamaGenConfig(
            vocab_size=codebook_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, block_size=grid * grid, num_classes=10,
        )  # fmt: skip
    else:
        codebook_size = codebook_size or 16384
        # LlamaGen's VQ-16 tokenizer (models.md §2)
        vq_config = JanusVQVAEConfig(
            embed_dim=8, num_embeddings=codebook_size, latent_channels=256, base_channels=128,
            channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2, num_patches=image_size // 16,
        )  # fmt: skip
        grid = image_size // 16
        policy_config = LlamaGenConfig.from_preset(model, vocab_size=codebook_size, block_size=grid * grid)
    torch.manual_seed(0)
    processor = ImageTokenizerProcessor.from_vq_config(vq_config, image_size=image_size)
    policy = LlamaGenForClassToImage(policy_config)
    return policy, processor


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time (s) of `fn()` over `repeats` runs after one warm-up, and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny, or a LlamaGen preset: GPT-B, GPT-L, GPT-XL, GPT-XXL.")
    parser.add_argument("--image-size", type=int, default=None, help="Pixels per side (default 32 tiny, 256 else).")
    parser.add_argument("--codebook-size", type=int, default=None)
    parser.add_argument("--num-images", type=int, default=2, help="U: source images in the step.")
    parser.add_argument("--num-generations", type=int, default=8, help="G: samples per image.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed repetitions per part (median reported).")
    parser.add_argument("--lpips-net", default="vgg", choices=["vgg", "alex"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the policy passes.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--json", default=None, help="Write the figures to this JSON file.")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image_size = args.image_size or (32 if args.model == "tiny" else 256)
    U, G = args.num_images, args.num_generations
    device = torch.device(args.device)

    with device:  # initialise on the device: a 1.4B-parameter (GPT-XXL) CPU init takes longer than the benchmark
        policy, processor = build_models(args.model, image_size, args.codebook_size)
    lpips_pretrained = os.path.isfile(lpips_backbone_path(args.lpips_net))
    with tempfile.TemporaryDirectory() as output_dir:
        config = VAPiConfig(
            output_dir=output_dir, learning_rate=1e-6, per_device_train_batch_size=U * G, num_generations=G,
            bf16=args.bf16, report_to="none", lpips_net=args.lpips_net, lpips_random_backbone=not lpips_pretrained,
            use_cpu=device.type == "cpu", context_noise_prob=0.5,
            loss_forward_mode="eval",  # deterministic, so that the grouped and naive losses can be compared
        )  # fmt: skip
        labels = [u % policy.config.num_classes for u in range(U)]
        # The trainer is built for its loss and reward code; the benchmark feeds tensors directly, not this dataset.
        dataset = Dataset.from_dict({"image": [Image.new("RGB", (image_size, image_size))] * U, "class_label": labels})
        trainer = VAPiTrainer(model=policy, args=config, train_dataset=dataset, image_tokenizer=processor)
    model = trainer.model
    model.train()
    autocast = trainer.accelerator.autocast

    torch.manual_seed(0)
    pixels = torch.rand(U, 3, image_size, image_size, device=device) * 2 - 1
    labels = torch.tensor(labels, device=device)
    figures: dict[str, float] = {}

    figures["vq_encode_s"], target_ids = timed(lambda: processor.encode(pixels), args.repeats)
    context = corrupt_context(target_ids, 0.5, policy.codebook_size)

    def sampling_forward():
        with torch.no_grad(), eval_mode(model), autocast():
            return model(class_labels=labels, context_ids=context).logits

    figures["sampling_forward_s"], logits = timed(sampling_forward, args.repeats)
    log_probs = filtered_log_probs(logits)
    figures["draw_s"], (samples, old_logps) = timed(lambda: sample_groups(log_probs, G), args.repeats)
    figures["vq_decode_s"], decoded = timed(lambda: processor.decode(samples.flatten(0, 1)), args.repeats)
    decoded = decoded.view(U, G, *decoded.shape[1:])
    figures["pixel_reward_s"], terms = timed(lambda: trainer.pixel_reward(decoded, pixels), args.repeats)
    advantages = torch.randn(U, G, device=device)
    inputs = {
        "condition.class_labels": labels, "context_ids": context, "target_ids": target_ids, "completion_ids": samples,
        "old_per_token_logps": old_logps, "advantages": advantages, "valid": torch.ones(U, dtype=torch.bool),
    }  # fmt: skip

    def grouped_loss_pass():
        model.zero_grad(set_to_none=True)
        with autocast():
            loss = trainer._compute_loss(model, inputs)
        loss.backward()
        return loss.detach()

    def naive_loss_pass():
        # The official formulation: G copies of each image, each with its own forward and CE, then one backward.
        model.zero_grad(set_to_none=True)
        total = 0.0
        for u in range(U):
            for g in range(G):
                with autocast(), dropout_disabled(model):
                    row_logits = model(class_labels=labels[u : u + 1], context_ids=context[u : u + 1]).logits
                new = filtered_log_probs(row_logits).gather(-1, samples[u : u + 1, g, :, None])[..., 0]
                policy_loss, _ = clipped_surrogate(
                    new[:, None], old_logps[u : u + 1, g : g + 1], advantages[u : u + 1, g : g + 1]
                )
                total = total + policy_loss + config.ce_coef * ce_prior(row_logits, target_ids[u : u + 1])
        loss = total / (U * G)
        loss.backward()
        return loss.detach()

    figures["loss_forward_backward_grouped_s"], grouped = timed(grouped_loss_pass, args.repeats)
    figures["loss_forward_backward_naive_s"], naive = timed(naive_loss_pass, args.repeats)
    figures["naive_over_grouped"] = (
        figures["loss_forward_backward_naive_s"] / figures["loss_forward_backward_grouped_s"]
    )
    figures["grouped_minus_naive_loss"] = abs(grouped.item() - naive.item())
    step_parts = ("vq_encode_s", "sampling_forward_s", "draw_s", "vq_decode_s", "pixel_reward_s")
    figures["step_total_grouped_s"] = sum(figures[k] for k in step_parts) + figures["loss_forward_backward_grouped_s"]
    figures["step_total_naive_s"] = sum(figures[k] for k in step_parts) + figures["loss_forward_backward_naive_s"]

    if device.type == "cuda":
        peak_memory = {"peak_gpu_memory_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    else:  # Linux reports ru_maxrss in KiB; it covers the whole process (weights, activations, Python)
        peak_memory = {"peak_process_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    report = {
        "model": args.model,
        "policy_parameters": sum(p.numel() for p in policy.parameters()),
        "vq_parameters": sum(p.numel() for p in processor.vq_model.parameters()),
        "image_size": image_size,
        "num_image_tokens": policy.num_image_tokens,
        "codebook_size": policy.codebook_size,
        "num_images": U,
        "num_generations": G,
        "bf16": args.bf16,
        "lpips": f"{args.lpips_net} ({'ImageNet' if lpips_pretrained else 'random'} backbone)",
        "repeats": args.repeats,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "seconds": {k: v for k, v in figures.items() if k.endswith("_s")},
        **peak_memory,
        "naive_over_grouped": figures["naive_over_grouped"],
        "grouped_minus_naive_loss": figures["grouped_minus_naive_loss"],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
