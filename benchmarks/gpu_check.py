"""Ready-for-the-GPU check: bf16 steps, peak memory, throughput, bf16 decode error and every accelerate config.

One command measures, on one CUDA GPU, and writes `gpu_check.json` plus `gpu_check.md` (one table per part):

- a. a full `VAPiTrainer` step (sampling forward, draw, VQ decode, reward, loss forward+backward, AdamW) of
  LlamaGen-XXL (random weights, 384 px, 576 tokens, K = 16384) at the C2I recipe's per-device micro-batch (one image
  × G = 8) in bf16 autocast, with and without gradient checkpointing: seconds per step and per image, peak memory,
  and the projected minutes of the 100-step recipe (128 images per step) on one GPU;
- b. the same for GPT-XL with LoRA and for a random-weight Janus with Janus-Pro-1B's dimensions;
- c. VQ decode + LPIPS at 384 px in fp32, bf16, bf16 + channels-last and bf16 + channels-last + SDPA in the VQ
  mid-block attention: time per image and the reward / advantage difference to fp32 against the within-group reward
  spread; plus the same error on the shipped demo VQ and policy (trained weights, 32 px);
- d. each config in `examples/accelerate_configs/` launched with `accelerate launch` on a tiny model for two steps
  (the second with an inf reward: the non-finite guard must skip it), then save and reload with `from_pretrained`;
- e. the official G-fold loss pass against ours at XXL size, same run (`benchmarks/step_cost.py`).

`--tiny --device cpu` runs every part end to end with tiny sizes (part d on 2 gloo CPU processes where a backend
allows it); the test suite runs it, so the script cannot rot. A part that cannot run reports why (e.g. DeepSpeed
not installed) and the others still run. Examples:

    python benchmarks/gpu_check.py                       # on a GPU machine, ≤ 8 min
    python benchmarks/gpu_check.py --tiny --device cpu   # CPU smoke run, ~1 min
    python benchmarks/gpu_check.py --parts c,e --out /tmp/check

Weights are random except where stated (timings do not depend on them). LPIPS uses its ImageNet backbone when the
file is in the torch cache and a random backbone (same cost) otherwise; the report says which.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the tiny Janus tokenizer and configs live in tests/conftest.py
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ACCELERATE_CONFIGS = ("single_gpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3", "fsdp")
PARTS = ("a", "b", "c", "d", "e")
# The recipes' images per optimizer step (docs/recipes.md): LlamaGen C2I 16 per GPU × 8 GPUs, Janus-Pro 8 × 8.
RECIPE_IMAGES_PER_STEP = {"llamagen": 128, "janus": 64}
RECIPE_STEPS = 100
# The paper's anchor: 100 steps of LlamaGen-XXL C2I in 25 min on 8×A100.
PAPER_GPU_MINUTES = 25 * 8

# Janus-Pro-1B: vision (SigLIP-L, 384 px, patch 16) and VQ (16384 codes, 24×24 grid) are transformers'
# `JanusVisionConfig` / `JanusVQVAEConfig` defaults (documented against deepseek-community/Janus-Pro-1B); the language
# model is the `language_config` of Janus-Pro-1B's config.json (DeepSeek-LLM-1.3B dimensions), because
# `JanusConfig`'s default text config is a plain `LlamaConfig()` (4096 wide, 32 layers), not Janus-Pro-1B's. The same
# numbers are the `text_config` of transformers' DeepSeek-VL-1.3B converter (`convert_deepseek_vl_weights_to_hf.py`),
# the DeepSeek-LLM-1.3B language model that Janus-1.3B and Janus-Pro-1B share.
JANUS_PRO_1B_TEXT = dict(  # noqa: C408
    vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
    num_key_value_heads=16, max_position_embeddings=16384, rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1,
    eos_token_id=2,
)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Sizes
# ----------------------------------------------------------------------------------------------------------------


def sizes(tiny: bool) -> dict[str, Any]:
    """Model sizes and step geometry of a run; tiny sizes keep the same code paths on CPU."""
    if tiny:
        return dict(  # noqa: C408
            llamagen="tiny", lora_model="tiny", janus="tiny", image_size=32, codebook_size=64, num_generations=8,
            images_per_step=1, warmup_steps=1, timed_steps=2, decode_images=2, decode_repeats=1, lpips_net="alex",
        )  # fmt: skip
    return dict(  # noqa: C408
        llamagen="GPT-XXL", lora_model="GPT-XL", janus="Janus-Pro-1B", image_size=384, codebook_size=16384,
        num_generations=8, images_per_step=1, warmup_steps=1, timed_steps=3, decode_images=2, decode_repeats=3,
        lpips_net="vgg",
    )  # fmt: skip


def vq_config(tiny: bool, image_size: int, codebook_size: int):
    from transformers import JanusVQVAEConfig

    if tiny:
        return JanusVQVAEConfig(
            embed_dim=8, num_embeddings=codebook_size, latent_channels=32, base_channels=32,
            channel_multiplier=[1, 1, 2, 2], num_res_blocks=1, projection_dim=32, image_token_embed_dim=32,
            num_hidden_layers=1, num_patches=image_size // 8,
        )  # fmt: skip
    # LlamaGen's VQ-16 tokenizer (72M parameters): the one the C2I recipe decodes with.
    return JanusVQVAEConfig(
        embed_dim=8, num_embeddings=codebook_size, latent_channels=256, base_channels=128,
        channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2, num_patches=image_size // 16,
    )  # fmt: skip


def build_llamagen(name: str, image_size: int, codebook_size: int, device: torch.device):
    """A random-weight LlamaGen C2I policy and VQ tokenizer (`name`: "tiny" or a preset such as "GPT-XXL")."""
    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenConfig, LlamaGenForClassToImage

    tiny = name == "tiny"
    grid = image_size // (8 if tiny else 16)
    if tiny:
        config = LlamaGenConfig(
            vocab_size=codebook_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, block_size=grid * grid, num_classes=10,
        )  # fmt: skip
    else:
        config = LlamaGenConfig.from_preset(name, vocab_size=codebook_size, block_size=grid * grid)
    torch.manual_seed(0)
    with device:  # initialise on the device: a 1.4B-parameter CPU init alone takes longer than a GPU step
        policy = LlamaGenForClassToImage(config)
        processor = ImageTokenizerProcessor.from_vq_config(vq_config(tiny, image_size, codebook_size), image_size)
    return policy, processor


def build_janus(name: str, device: torch.device):
    """A random-weight `JanusForImageGeneration` ("tiny", or "Janus-Pro-1B" dimensions), its frozen VQ copy, and the
    offline Janus-like tokenizer of the tests (prompt lengths are a few tokens; the 576 image tokens dominate)."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    from tests.conftest import make_tiny_janus_tokenizer, tiny_janus_config
    from vapi_trl.models import JanusForImageGeneration, janus_image_tokenizer_from_model

    if name == "tiny":
        config = tiny_janus_config()
    else:
        config = JanusConfig(
            text_config=LlamaConfig(**JANUS_PRO_1B_TEXT), vision_config=JanusVisionConfig(),
            vq_config=JanusVQVAEConfig(), image_token_id=100581,
        )  # fmt: skip
    torch.manual_seed(0)
    with device:
        model = JanusForImageGeneration(config)
    tokenizer = make_tiny_janus_tokenizer()
    model.set_special_token_ids(tokenizer)
    return model, janus_image_tokenizer_from_model(model), tokenizer


# ----------------------------------------------------------------------------------------------------------------
# Measuring helpers
# ----------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> tuple[float, str]:
    """Peak memory since the last reset and what it measures: `torch.cuda.max_memory_allocated` on a GPU; on CPU the
    process's peak RSS (monotonic over the whole run: weights, activations, Python, every earlier part)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"


def lpips_pretrained(net: str) -> bool:
    from vapi_trl.rewards import lpips_backbone_path

    return os.path.isfile(lpips_backbone_path(net))


def random_image_dataset(num_images: int, size: int, column: str, values: list, seed: int = 0):
    import numpy as np
    from datasets import Dataset, Features, Image, Value

    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(num_images)]
    feature = Value("int64") if isinstance(values[0], int) else Value("string")
    return Dataset.from_dict(
        {"image": images, column: [values[i % len(values)] for i in range(num_images)]},
        features=Features({"image": Image(), column: feature}),
    )


def with_gt_ids(dataset, image_tokenizer):
    """Add the pre-extracted `gt_ids` column (what `vapi-trl tokenize` gives the recipes): no VQ encode per step."""
    pixels = image_tokenizer.preprocess([row["image"] for row in dataset])
    ids = torch.cat([image_tokenizer.encode(chunk.to(image_tokenizer.device)) for chunk in pixels.split(4)])
    return dataset.add_column("gt_ids", ids.cpu().tolist())


class StepTimer:
    """Wall time of each optimizer step: between consecutive `on_step_end` events, device synchronised (includes
    sampling, decode, reward, loss forward+backward, optimizer and logging)."""

    def __new__(cls, device):
        from transformers import TrainerCallback

        class _StepTimer(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []
                self.last = None

            def on_step_begin(self, args, state, control, **kwargs):
                if self.last is None:
                    synchronize(device)
                    self.last = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                synchronize(device)
                now = time.perf_counter()
                self.times.append(now - self.last)
                self.last = now

        return _StepTimer()


def train_and_time(
    policy, image_tokenizer, dataset, device, size: dict, *, recipe: str, gradient_checkpointing: bool = False,
    peft_config=None, processing_class=None, lpips_net: str = "vgg", context_noise_prob: float = 0.5,
) -> dict[str, Any]:  # fmt: skip
    """Train `warmup + timed` optimizer steps of one micro-batch (images_per_step × G rows) and report the timed ones.

    Returns a row: seconds per step (median of the timed steps), per image, peak memory, projected recipe minutes on
    one GPU (`RECIPE_STEPS` × the recipe's images per step × seconds per image), parameter counts."""
    from vapi_trl import VAPiConfig, VAPiTrainer

    G, U = size["num_generations"], size["images_per_step"]
    steps = size["warmup_steps"] + size["timed_steps"]
    timer = StepTimer(device)
    with tempfile.TemporaryDirectory() as output_dir:
        args = VAPiConfig(
            output_dir=output_dir, learning_rate=1e-6, per_device_train_batch_size=U * G, num_generations=G,
            max_steps=steps, bf16=device.type == "cuda", use_cpu=device.type == "cpu", report_to="none",
            save_strategy="no", logging_steps=1, num_images_to_log=0, dataloader_num_workers=0, seed=0,
            gradient_checkpointing=gradient_checkpointing, lpips_net=lpips_net,
            lpips_random_backbone=not lpips_pretrained(lpips_net), context_noise_prob=context_noise_prob,
            weight_decay=1e-4, adam_beta2=0.999,
        )  # fmt: skip
        reset_peak_memory(device)
        trainer = VAPiTrainer(
            model=policy, args=args, train_dataset=dataset, image_tokenizer=image_tokenizer, callbacks=[timer],
            peft_config=peft_config, processing_class=processing_class,
        )  # fmt: skip
        trainer.train()
        peak, kind = peak_memory_gib(device)
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
        del trainer
    timed = timer.times[size["warmup_steps"] :]
    step_s = statistics.median(timed)
    per_image = step_s / U
    return {
        "gradient_checkpointing": gradient_checkpointing,
        "lora": peft_config is not None,
        "rows_per_step": U * G,
        "step_s": step_s,
        "image_s": per_image,
        "peak_memory_gib": peak,
        "memory_kind": kind,
        "recipe_minutes_one_gpu": RECIPE_STEPS * RECIPE_IMAGES_PER_STEP[recipe] * per_image / 60,
        "parameters": total,
        "trainable_parameters": trainable,
        "losses_finite": all(math.isfinite(loss) for loss in losses) and len(losses) == steps,
        "timed_steps": len(timed),
    }


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------------------------


def part_a(device: torch.device, size: dict, tiny: bool) -> list[dict]:
    """LlamaGen-XXL full steps, with and without gradient checkpointing."""
    rows = []
    for checkpointing in (False, True):
        policy, processor = build_llamagen(size["llamagen"], size["image_size"], size["codebook_size"], device)
        steps = size["warmup_steps"] + size["timed_steps"]
        dataset = random_image_dataset(steps * size["images_per_step"], size["image_size"], "class_label", [0, 1, 2])
        dataset = with_gt_ids(dataset, processor)
        row = train_and_time(
            policy, processor, dataset, device, size, recipe="llamagen", gradient_checkpointing=checkpointing,
            lpips_net=size["lpips_net"],
        )  # fmt: skip
        rows.append({"model": f"LlamaGen {size['llamagen']} C2I", "tokens": policy.num_image_tokens, **row})
        del policy, processor
        release(device)
    return rows


def part_b(device: torch.device, size: dict, tiny: bool) -> list[dict]:
    """GPT-XL with LoRA, and a random Janus with Janus-Pro-1B's dimensions."""
    from peft import LoraConfig

    rows = []
    steps = size["warmup_steps"] + size["timed_steps"]
    policy, processor = build_llamagen(size["lora_model"], size["image_size"], size["codebook_size"], device)
    dataset = with_gt_ids(
        random_image_dataset(steps * size["images_per_step"], size["image_size"], "class_label", [0, 1]), processor
    )
    lora = LoraConfig(task_type=None, r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    row = train_and_time(
        policy, processor, dataset, device, size, recipe="llamagen", peft_config=lora, lpips_net=size["lpips_net"]
    )
    rows.append({"model": f"LlamaGen {size['lora_model']} C2I + LoRA r=16 (q,k,v,o)", "tokens": policy.num_image_tokens,
                 **row})  # fmt: skip
    del policy, processor
    release(device)

    model, image_tokenizer, tokenizer = build_janus(size["janus"], device)
    captions = ["a red cat", "the big blue dog on a table", "a photo of an apple"]
    dataset = random_image_dataset(steps * size["images_per_step"], image_tokenizer.image_size, "prompt", captions)
    dataset = with_gt_ids(dataset, image_tokenizer)
    row = train_and_time(
        model, image_tokenizer, dataset, device, size, recipe="janus", processing_class=tokenizer, lpips_net="alex",
        context_noise_prob=1.0,
    )  # fmt: skip
    rows.append({"model": f"Janus {size['janus']} dims (random)", "tokens": model.num_image_tokens, **row})
    del model, image_tokenizer
    release(device)
    return rows


def _sdpa_attn_forward(self, hidden_states):
    # The same computation as transformers' JanusVQVAEAttnBlock.forward (single-head attention over the h·w positions)
    # through F.scaled_dot_product_attention instead of bmm + softmax + bmm. Measured here only, not shipped.
    residual = hidden_states
    hidden_states = self.norm(hidden_states)
    batch, channels, height, width = hidden_states.shape
    query, key, value = (
        conv(hidden_states).reshape(batch, 1, channels, height * width).transpose(2, 3)
        for conv in (self.q, self.k, self.v)
    )
    attended = torch.nn.functional.scaled_dot_product_attention(query, key, value)
    attended = attended.transpose(2, 3).reshape(batch, channels, height, width)
    return residual + self.proj_out(attended)


@contextlib.contextmanager
def sdpa_mid_block(vq_model):
    blocks = [m for m in vq_model.modules() if type(m).__name__ == "JanusVQVAEAttnBlock"]
    for block in blocks:
        block.forward = _sdpa_attn_forward.__get__(block)
    try:
        yield len(blocks)
    finally:
        for block in blocks:
            del block.forward


def decode_and_score(processor, reward, completion_ids, targets, mode: str, device: torch.device) -> torch.Tensor:
    """Decode `completion_ids` `[U, G, N]` and score them against `targets` `[U, 3, H, W]`; returns rewards `[U, G]`.

    `mode`: "fp32", "bf16" (autocast), "bf16+channels_last", "bf16+channels_last+sdpa". Returns the `RewardTerms`."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode != "fp32")
    vq_model = processor.vq_model
    memory_format = torch.channels_last if "channels_last" in mode else torch.contiguous_format
    vq_model.to(memory_format=memory_format)
    if reward.lpips_model is not None:
        reward.lpips_model.to(memory_format=memory_format)
    sdpa = sdpa_mid_block(vq_model) if "sdpa" in mode else contextlib.nullcontext()
    try:
        with torch.no_grad(), autocast, sdpa:
            decoded = processor.decode(completion_ids.flatten(0, 1))
            decoded = decoded.view(*completion_ids.shape[:2], *decoded.shape[1:])
            return reward(decoded, targets)
    finally:
        vq_model.to(memory_format=torch.contiguous_format)
        if reward.lpips_model is not None:
            reward.lpips_model.to(memory_format=torch.contiguous_format)


def reward_error(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Reward and advantage error of `other` against `reference` (both `[U, G]`), in units of the group spread."""
    from vapi_trl.objective import group_advantages

    spread = reference.std(dim=1).mean().item()
    error = (other - reference).abs()
    advantage_error = (group_advantages(other) - group_advantages(reference)).abs()
    ranks_equal = (other.argsort(dim=1) == reference.argsort(dim=1)).all(dim=1).float().mean().item()
    return {
        "reward_abs_err_mean": error.mean().item(),
        "reward_abs_err_max": error.max().item(),
        "within_group_std": spread,
        "err_over_std": error.mean().item() / spread if spread > 0 else float("inf"),
        "advantage_abs_err_max": advantage_error.max().item(),
        "groups_same_ranking": ranks_equal,
    }


def part_c(device: torch.device, size: dict, tiny: bool) -> list[dict]:
    """VQ decode + LPIPS in fp32 vs bf16 variants: time per image and reward error against fp32."""
    from vapi_trl.models import ImageTokenizerProcessor
    from vapi_trl.objective import filtered_log_probs, sample_groups
    from vapi_trl.rewards import PixelReconstructionReward, build_lpips

    G = size["num_generations"]
    modes = ["fp32", "bf16", "bf16+channels_last", "bf16+channels_last+sdpa"]
    rows = []
    net = size["lpips_net"]
    pretrained = lpips_pretrained(net)
    lpips_model = build_lpips(net, random_backbone=not pretrained).to(device)
    reward = PixelReconstructionReward(lpips_model=lpips_model, chunk_size=16)
    lpips_label = f"LPIPS-{net} ({'ImageNet' if pretrained else 'random'} backbone)"

    # 1. The recipe's VQ at the recipe's size, random weights: timing, and the error of a random decoder.
    torch.manual_seed(0)
    with device:
        processor = ImageTokenizerProcessor.from_vq_config(
            vq_config(tiny, size["image_size"], size["codebook_size"]), size["image_size"]
        )
    U = size["decode_images"]
    targets = torch.rand(U, 3, size["image_size"], size["image_size"], device=device) * 2 - 1
    clean = processor.encode(targets)
    # Samples near the clean tokens, as teacher-forced samples are: each token resampled with probability 0.3.
    resample = torch.rand(U, G, clean.shape[1], device=device) < 0.3
    completion_ids = torch.where(resample, torch.randint_like(resample, size["codebook_size"], dtype=torch.long),
                                 clean[:, None].expand(-1, G, -1))  # fmt: skip
    reference = None
    for mode in modes:
        if device.type == "cuda":  # warm-up (cudnn autotune, bf16 kernels)
            decode_and_score(processor, reward, completion_ids, targets, mode, device)
        times = []
        for _ in range(size["decode_repeats"]):
            synchronize(device)
            start = time.perf_counter()
            rewards = decode_and_score(processor, reward, completion_ids, targets, mode, device).total
            synchronize(device)
            times.append(time.perf_counter() - start)
        reference = rewards if reference is None else reference
        rows.append({
            "case": f"VQ-16 at {size['image_size']} px, random weights, {lpips_label}" if not tiny
            else f"tiny VQ at {size['image_size']} px, random weights, {lpips_label}",
            "mode": mode, "image_s": statistics.median(times) / (U * G), **reward_error(reference, rewards),
        })  # fmt: skip
    del processor
    release(device)

    # 2. The shipped demo VQ and policy: trained weights, so the error is that of a real decoder on real samples.
    from vapi_trl.demo import embedded

    processor = embedded.load_image_tokenizer().to(device)
    policy = embedded.load_policy().to(device)
    images, labels = embedded.load_arrays("test", limit=16)
    targets = embedded.to_pixels(images).to(device)
    clean = processor.encode(targets)
    torch.manual_seed(0)
    with torch.no_grad():
        logits = policy(class_labels=torch.as_tensor(labels, device=device), context_ids=clean[:, :-1]).logits
    completion_ids, _ = sample_groups(filtered_log_probs(logits.float()), G)
    reference = decode_and_score(processor, reward, completion_ids, targets, "fp32", device)
    terms = decode_and_score(processor, reward, completion_ids, targets, "bf16", device)
    case = f"demo VQ + policy (trained, 32 px, 16 images × G={G})"
    rows.append({
        "case": f"{case}, MSE + {lpips_label}", "mode": "bf16", "image_s": float("nan"),
        **reward_error(reference.total, terms.total),
    })  # fmt: skip
    # The pixel (MSE) term does not depend on the LPIPS backbone: the trained-weights figure that holds as is.
    rows.append({
        "case": f"{case}, MSE term only", "mode": "bf16", "image_s": float("nan"),
        **reward_error(-reference.pixel, -terms.pixel),
    })  # fmt: skip
    del processor, policy, lpips_model
    release(device)
    return rows


def part_d(device: torch.device, size: dict, tiny: bool) -> list[dict]:
    """Launch each accelerate config on a tiny model: two steps (the second non-finite), save, reload."""
    rows = []
    for name in ACCELERATE_CONFIGS:
        rows.append(launch_config(name, device))
    return rows


def part_e(device: torch.device, size: dict, tiny: bool) -> list[dict]:
    """The official G-fold loss pass vs the grouped one, at XXL size (tiny on CPU), same run."""
    import step_cost

    argv = [
        "--model", size["llamagen"], "--image-size", str(size["image_size"]), "--num-images", "1",
        "--num-generations", str(size["num_generations"]), "--repeats", "1" if tiny else "2",
        "--device", device.type, "--lpips-net", size["lpips_net"],
    ]  # fmt: skip
    if device.type == "cuda":
        argv.append("--bf16")
    report = step_cost.main(argv)
    seconds = report["seconds"]
    release(device)
    return [{
        "model": f"LlamaGen {size['llamagen']}", "num_generations": size["num_generations"],
        "grouped_s": seconds["loss_forward_backward_grouped_s"], "naive_s": seconds["loss_forward_backward_naive_s"],
        "naive_over_grouped": report["naive_over_grouped"], "grouped_minus_naive_loss": report["grouped_minus_naive_loss"],
        "step_total_grouped_s": seconds["step_total_grouped_s"], "step_total_naive_s": seconds["step_total_naive_s"],
    }]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Part d: accelerate launches
# ----------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_plan(name: str, device: torch.device) -> tuple[list[str] | None, str]:
    """The `accelerate launch` options for config `name` on this device, or None and why it cannot run."""
    import importlib.util

    config_file = os.path.join(ROOT, "examples", "accelerate_configs", f"{name}.yaml")
    if name.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        return None, f"{name} needs deepspeed, not installed (`pip install deepspeed`)"
    port = ["--main_process_port", str(_free_port())]
    if device.type == "cuda":
        # One process on one GPU, as the issue asks: the configs' sharding code paths run with world size 1.
        return ["--config_file", config_file, "--num_processes", "1", *port], "1 GPU process"
    # CPU: the gloo launcher. `--multi_gpu` starts 2 torchrun processes that fall back to CPU + gloo; `--cpu` with 2
    # processes starts only one (accelerate's simple launcher), so it is used only for the single-process config.
    common = ["--mixed_precision", "no", "--dynamo_backend", "no", "--num_machines", "1", *port]
    if name == "single_gpu":
        return ["--config_file", config_file, "--cpu", "--num_processes", "1", *common], "1 CPU process"
    return ["--config_file", config_file, "--num_processes", "2", *common], "2 CPU processes (gloo)"


def launch_config(name: str, device: torch.device) -> dict:
    """Launch config `name` (see `_launch_once`); a failed launch is retried once on a fresh port, and the row says so
    (`attempts`, `first_failure`): one 2-process gloo rendezvous in about five failed on the 2-core CI machine with no
    Python error, while the rerun of the same command passed."""
    row = _launch_once(name, device)
    if row["status"] != "failed":
        return {**row, "attempts": 1}
    retry = _launch_once(name, device)
    return {**retry, "attempts": 2, "first_failure": f"{row['reason']}: {row.get('log_tail', '')[-800:]}"}


def _launch_once(name: str, device: torch.device) -> dict:
    accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    options, how = launch_plan(name, device)
    if options is None:
        return {"config": name, "launch": "not launched", "status": "skipped", "reason": how}
    row = {"config": name, "launch": how}
    with tempfile.TemporaryDirectory() as output_dir:
        command = [accelerate, "launch", *options, os.path.abspath(__file__), "--worker", output_dir]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GPU_CHECK_DEVICE": device.type}
        start = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
        wall = time.perf_counter() - start
        record_path = os.path.join(output_dir, "worker.json")
        if result.returncode != 0 or not os.path.isfile(record_path):
            tail = (result.stdout[-1500:] + "\n" + result.stderr[-2500:]).strip()
            return {**row, "status": "failed", "reason": f"exit {result.returncode}", "log_tail": tail, "wall_s": wall}
        with open(record_path) as f:
            record = json.load(f)
    row = {**row, "status": "ran", "wall_s": wall, **record}
    if name == "fsdp" and record["distributed_type"] != "FSDP":
        # accelerate (1.15, state.py) turns ACCELERATE_USE_FSDP into FSDP only for GPU-type distributed setups.
        row["status"] = "ran as DDP"
        row["reason"] = f"accelerate runs FSDP only on GPUs; here it ran as {record['distributed_type']}"
    return row


def worker(output_dir: str) -> None:
    """Runs under `accelerate launch`: 2 steps of a tiny LlamaGen, the second with an inf reward, then save + reload."""
    from safetensors import safe_open

    from tests.conftest import make_image_dataset, tiny_llamagen_config, tiny_vq_config
    from vapi_trl import VAPiConfig, VAPiTrainer
    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage

    use_cpu = os.environ.get("GPU_CHECK_DEVICE", "cpu") == "cpu"
    torch.manual_seed(0)
    image_tokenizer = ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32)
    torch.manual_seed(0)
    policy = LlamaGenForClassToImage(tiny_llamagen_config(num_classes=16))
    calls = []

    # Step 2 is poisoned (+inf: an extra reward's NaN means "does not apply" in TRL): its gradients are non-finite.
    def inf_on_second_step(prompts, completions, **kwargs):
        calls.append(len(completions))
        # one +inf per batch (an all-inf group has zero advantages and would train normally)
        return [float("inf")] + [0.0] * (len(completions) - 1) if len(calls) == 2 else [0.0] * len(completions)

    args = VAPiConfig(
        output_dir=output_dir, per_device_train_batch_size=4, num_generations=2, max_steps=2, learning_rate=1e-2,
        bf16=not use_cpu, use_cpu=use_cpu, report_to="none", save_strategy="no", lpips_net="alex",
        lpips_random_backbone=True, seed=0, logging_steps=1, num_images_to_log=0, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = VAPiTrainer(
        model=policy, args=args, train_dataset=make_image_dataset(num_images=16, num_classes=16),
        image_tokenizer=image_tokenizer, reward_funcs=[inf_on_second_step],
    )  # fmt: skip
    accelerator = trainer.accelerator
    snapshots = []

    def snapshot():  # full (gathered) policy weights: collective under ZeRO-3 / FSDP, so every rank calls it
        state = accelerator.get_state_dict(trainer.model_wrapped)
        return {k: v.detach().float().cpu().clone() for k, v in state.items()} if accelerator.is_main_process else {}

    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            snapshots.append(snapshot())

        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append(snapshot())

    trainer.add_callback(Snapshots())
    trainer.train()
    final = os.path.join(output_dir, "final")
    trainer.save_model(final)
    accelerator.wait_for_everyone()

    # The frozen VQ and LPIPS stay whole: plain tensors of full size on every rank, never wrapped or partitioned.
    frozen = list(trainer.image_tokenizer.vq_model.parameters()) + list(trainer.pixel_reward.lpips_model.parameters())
    reference_vq = ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32).vq_model
    whole = all(
        type(p) is torch.nn.Parameter and not hasattr(p, "ds_id") and p.numel() > 0 and not p.requires_grad
        for p in frozen
    ) and [p.shape for p in trainer.image_tokenizer.vq_model.parameters()] == [
        p.shape for p in reference_vq.parameters()
    ]
    whole_all = bool(accelerator.gather(torch.tensor([float(whole)], device=accelerator.device)).min().item())
    engine = type(trainer.model_wrapped).__name__
    sharded = any(hasattr(p, "ds_id") or type(p).__name__ == "DTensor" for p in trainer.model.parameters())
    if not accelerator.is_main_process:
        return

    before, after_step1, after_step2 = snapshots[0], snapshots[1], snapshots[2]
    changed_by_step1 = sum((after_step1[k] - before[k]).abs().sum().item() for k in before)
    changed_by_step2 = sum((after_step2[k] - after_step1[k]).abs().sum().item() for k in before)
    finite = all(torch.isfinite(v).all().item() for v in after_step2.values())
    files = sorted(os.listdir(final))
    saved_keys = set()
    for file in files:
        if file.endswith(".safetensors"):
            with safe_open(os.path.join(final, file), "pt") as f:
                saved_keys |= set(f.keys())
    # Reloaded in a fresh process, as a user would: inside this one, ZeRO-3's zero.Init would partition the model (a
    # collective) while only this rank loads it.
    reloaded_file = os.path.join(output_dir, "reloaded.safetensors")
    code = (
        "import sys; from safetensors.torch import save_file; from vapi_trl.models import LlamaGenForClassToImage; "
        "m = LlamaGenForClassToImage.from_pretrained(sys.argv[1]); "
        "save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, final, reloaded_file], check=True, env={**os.environ})
    with safe_open(reloaded_file, "pt") as f:
        reloaded = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    reload_err = max((reloaded[name].float() - after_step2[name]).abs().max().item() for name in after_step2)
    record = {
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "engine": engine,
        "policy_sharded": sharded,
        "mixed_precision": accelerator.mixed_precision,
        "skipped_steps": trainer._step_guard.skipped_steps,
        "step1_param_change": changed_by_step1,
        "step2_param_change": changed_by_step2,
        "params_finite": finite,
        "frozen_whole_on_all_ranks": whole_all,
        "saved_files": files,
        "saved_frozen_keys": sorted(k for k in saved_keys if k.startswith(("vq", "lpips", "image_tokenizer"))),
        "saved_keys_are_policy": saved_keys == set(reloaded) == set(after_step2),
        "reload_max_abs_err": reload_err,
    }
    with open(os.path.join(output_dir, "worker.json"), "w") as f:
        json.dump(record, f)


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------

PART_TITLES = {
    "a": "a. Full VA-π step, LlamaGen C2I (recipe micro-batch: 1 image × G)",
    "b": "b. LoRA and Janus-Pro-1B dimensions",
    "c": "c. VQ decode + LPIPS: fp32 vs bf16 (reward error against fp32, in units of the within-group std)",
    "d": "d. accelerate configs: 2 steps (the 2nd non-finite) + save + from_pretrained",
    "e": "e. Loss pass: official G-fold vs grouped, same run",
}
PART_COLUMNS = {
    "a": ["model", "tokens", "gradient_checkpointing", "rows_per_step", "step_s", "image_s", "peak_memory_gib",
          "memory_kind", "recipe_minutes_one_gpu", "parameters", "losses_finite"],
    "b": ["model", "tokens", "lora", "rows_per_step", "step_s", "image_s", "peak_memory_gib", "memory_kind",
          "recipe_minutes_one_gpu", "parameters", "trainable_parameters", "losses_finite"],
    "c": ["case", "mode", "image_s", "reward_abs_err_mean", "reward_abs_err_max", "within_group_std", "err_over_std",
          "advantage_abs_err_max", "groups_same_ranking"],
    "d": ["config", "launch", "status", "reason", "world_size", "distributed_type", "engine", "policy_sharded",
          "skipped_steps", "step1_param_change", "step2_param_change", "frozen_whole_on_all_ranks",
          "saved_keys_are_policy", "reload_max_abs_err", "attempts", "wall_s"],
    "e": ["model", "num_generations", "grouped_s", "naive_s", "naive_over_grouped", "grouped_minus_naive_loss",
          "step_total_grouped_s", "step_total_naive_s"],
}  # fmt: skip


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10**6:
        return f"{value / 1e6:.1f}M"
    return "" if value is None else str(value)


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [
        f"# gpu_check ({'tiny' if meta['tiny'] else 'full'}) on {meta['device_name']}",
        "",
        f"{meta['date']}, torch {meta['torch']}, {meta['wall_s']:.0f} s in all. Command: `{meta['command']}`.",
        "",
        "Packages: " + ", ".join(f"{name} {v}" for name, v in meta["packages"].items()) + ".",
        "",
    ]
    for part in PARTS:
        entry = report["parts"].get(part)
        if entry is None:
            continue
        lines += [f"## {PART_TITLES[part]}", ""]
        if entry["status"] != "ran":
            lines += [f"Not run: {entry['reason']}", ""]
            continue
        columns = PART_COLUMNS[part]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in entry["rows"]]
        lines += ["", f"({entry['wall_s']:.1f} s)", ""]
    return "\n".join(lines)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("transformers", "trl", "accelerate", "peft", "deepspeed"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_part(part: str, device: torch.device, size: dict, tiny: bool) -> dict:
    functions = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e}
    if device.type == "cuda" and not torch.cuda.is_available():
        return {"status": "skipped", "reason": "CUDA is not available on this machine"}
    start = time.perf_counter()
    try:
        rows = functions[part](device, size, tiny)
    except Exception as error:  # noqa: BLE001 (one failing part must not hide the others' figures)
        return {"status": "failed", "reason": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    finally:
        release(device)
    return {"status": "ran", "rows": rows, "wall_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="Tiny sizes (CPU smoke run of every part).")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--parts", default=",".join(PARTS), help="Comma-separated subset of a,b,c,d,e.")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gpu_check"),
                        help="Folder for gpu_check.json and gpu_check.md.")  # fmt: skip
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: part d, under accelerate
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return {}
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--parts: unknown part(s) {unknown}; choose from {list(PARTS)}.")
    device = torch.device(args.device)
    size = sizes(args.tiny)
    start = time.perf_counter()
    report = {"meta": {}, "sizes": size, "parts": {}}
    for part in parts:
        print(f"[gpu_check] part {part} ...", flush=True)
        report["parts"][part] = run_part(part, device, size, args.tiny)
        print(f"[gpu_check] part {part}: {report['parts'][part]['status']}", flush=True)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    report["meta"] = {
        "tiny": args.tiny,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or "cpu"),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "packages": package_versions(),
        "torch_threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - start,
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
