"""VA-π trainer: TRL's GRPOTrainer with teacher-forced sampling and pixel-reconstruction rewards."""

import contextlib
import copy
import logging
import math
import os
import textwrap
from collections.abc import Callable
from typing import Any

import PIL.Image
import torch
from accelerate.utils import gather
from datasets import Dataset, IterableDataset
from tokenizers import Tokenizer, models
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.extras.profiling import profiling_context

from .batch import StepBatch
from .callbacks import NonFiniteStepGuard
from .checkpoints import last_complete_checkpoint
from .config import VAPiConfig
from .data import ImageDecodeError, check_dataset_columns, decode_image, defer_image_decoding, describe_image
from .data import is_encoded_image
from .dropout import dropout_disabled, eval_mode
from .image_logging import SampleGridLogger
from .models.processing_utils import ImageTokenPolicyProcessor, processor_for_policy
from .model_card import model_card_text
from .objective import (
    ce_prior,
    clipped_surrogate,
    corrupt_context,
    filtered_log_probs,
    gather_sample_log_probs,
    group_advantages,
    k3_kl,
    sample_groups,
    token_entropy,
)
from .policy import check_policy
from .rewards import PixelReconstructionReward, PixelReconstructionRewardFunc, build_lpips, extra_reward_value


logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float]]


def _placeholder_tokenizer() -> PreTrainedTokenizerFast:
    # GRPOTrainer needs a text tokenizer (it loads one from the model id when none is given, and writes its pad/eos ids
    # into the model config). A one-word vocabulary without special tokens satisfies it and writes no ids.
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unused>": 0}, unk_token="<unused>")))


def _check_trainer_inputs(
    model, args, processing_class, image_tokenizer, train_dataset, eval_dataset
) -> ImageTokenPolicyProcessor:
    """Raise on arguments `VAPiTrainer` cannot train with, before anything is built: the config type, the policy
    (`check_policy`), its family processor (`processor_for_policy`, then `prepare_policy`: image tokenizer, classes,
    caption slots) and the datasets' columns. Returns the processor."""
    if not isinstance(args, VAPiConfig):
        raise TypeError(f"`args` must be a VAPiConfig, got {type(args).__name__}.")
    if isinstance(model, str):
        raise TypeError(
            "VAPiTrainer needs an instantiated policy (e.g. `LlamaGenForClassToImage.from_pretrained(path)`), "
            f"got the string {model!r}."
        )
    policy = model.get_base_model() if hasattr(model, "get_base_model") else model
    check_policy(policy)
    processor = processor_for_policy(policy, processing_class, image_tokenizer)
    if processor.image_tokenizer is None:
        raise ValueError(
            "VAPiTrainer needs the frozen `image_tokenizer` (an `ImageTokenizerProcessor`) that produced the "
            "policy's codes, e.g. `ImageTokenizerProcessor.from_pretrained(path)`, passed as `image_tokenizer` or "
            "held by the family processor passed as `processing_class`."
        )
    processor.prepare_policy(policy)
    condition_columns = tuple(policy.condition_columns)
    check_dataset_columns(train_dataset, "train_dataset", condition_columns)
    if eval_dataset is not None:
        check_dataset_columns(eval_dataset, "eval_dataset", condition_columns)
    return processor


def _build_pixel_reward(args: VAPiConfig, lpips_model=None) -> PixelReconstructionReward:
    """The frozen pixel-reconstruction reward of `args`; LPIPS is built from `args.lpips_net` unless given."""
    if lpips_model is None and args.lpips_weight > 0:
        lpips_model = build_lpips(args.lpips_net, random_backbone=args.lpips_random_backbone)
    if lpips_model is not None:
        lpips_model = lpips_model.eval().requires_grad_(False)
    return PixelReconstructionReward(
        pixel_loss=args.pixel_loss,
        pixel_weight=args.pixel_weight,
        lpips_weight=args.lpips_weight,
        lpips_model=lpips_model,
        chunk_size=args.decode_chunk_size,
    )


class VAPiTrainer(GRPOTrainer):
    r"""
    Trainer for VA-π, [Variational Policy Alignment for Pixel-Aware Autoregressive
    Generation](https://huggingface.co/papers/2512.19680).

    For each image, the frozen image tokenizer gives the ground-truth tokens x*; the context is corrupted with
    probability ξ per token; ONE teacher-forced forward of the policy gives logits at every image position, from which G
    token sequences are drawn in parallel; each is decoded by the frozen VQ decoder and rewarded by
    `−(pixel error + λ·LPIPS)` against the original image. The loss is a PPO-style clipped surrogate with group-normalised
    advantages plus `ce_coef` times the cross-entropy of x* given the noisy context. One forward+backward per image
    serves all G samples.

    Example:

    ```python
    from datasets import load_dataset
    from vapi_trl import VAPiConfig, VAPiTrainer
    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage, LlamaGenProcessor

    policy = LlamaGenForClassToImage.from_pretrained("path/to/llamagen-c2i")
    image_tokenizer = ImageTokenizerProcessor.from_pretrained("path/to/vq-tokenizer")
    processor = LlamaGenProcessor.from_policy(policy, image_tokenizer)  # rows -> class_labels, + the VQ
    dataset = load_dataset("imagefolder", data_dir="train/")["train"].rename_column("label", "class_label")
    # LlamaGen C2I recipe per GPU: one image × G = 8 samples per micro-batch, 16 accumulation steps, 100 steps.
    args = VAPiConfig(
        output_dir="out", learning_rate=1e-6, per_device_train_batch_size=8, num_generations=8,
        gradient_accumulation_steps=16, max_steps=100, context_noise_prob=0.0, loss_forward_mode="train",
    )
    trainer = VAPiTrainer(model=policy, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    ```

    Args:
        model ([`~transformers.PreTrainedModel`]):
            The policy, an [`~vapi_trl.policy.ImageTokenPolicy`] (checked here): its forward takes the condition
            kwargs and `context_ids` `[B, N−1]` (and `cfg_scale`) and returns `logits` `[B, N, K]` over the codebook,
            where index t predicts image token t. It exposes `codebook_size`, `num_image_tokens`, `condition_columns`
            (dataset columns holding the condition, e.g. `("class_label",)`), `drop_condition(condition, drop_mask)
            -> dict[str, Tensor]` (the null condition, for label dropout) and `processor_class`, its family
            processor.
        args ([`VAPiConfig`]):
            Training configuration; `learning_rate` must be set.
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Rows with an `image` column (PIL images, any mode and size) and a `class_label` column (int in
            `[0, num_classes)`). An optional `gt_ids` column of pre-extracted tokens `[N]` skips the VQ encode.
        image_tokenizer ([`~vapi_trl.models.ImageTokenizerProcessor`], *optional*):
            Frozen VQ tokenizer: `preprocess`, `encode`, `decode`. Kept out of the optimizer, of DDP/DeepSpeed
            wrapping and of saved checkpoints. Not needed when `processing_class` is a family processor holding it.
        reward_funcs (callable or list of callables, *optional*):
            Extra rewards added to the pixel-reconstruction reward, in TRL's convention:
            `f(prompts, completions, completion_ids, **columns) -> list[float]`, one value per sample, where
            `completions` are the decoded images (`[3, H, W]` tensors in [-1, 1]) and `prompts` the conditions. If
            `args.reward_weights` is set, it has one weight per reward, the pixel reward first.
        eval_dataset ([`~datasets.Dataset`], *optional*):
            Same columns as `train_dataset`; evaluated with `num_generations_eval` samples per image.
        callbacks (list of [`~transformers.TrainerCallback`], *optional*):
            As in [`~trl.GRPOTrainer`].
        optimizers (`tuple`, *optional*):
            `(optimizer, lr_scheduler)`, as in [`~transformers.Trainer`].
        peft_config ([`~peft.PeftConfig`], *optional*):
            Adapter to train instead of the full policy; pass `LoraConfig(task_type=None, ...)`.
        lpips_model (`lpips.LPIPS`, *optional*):
            A ready LPIPS network; by default one is built from `args.lpips_net` when `args.lpips_weight > 0`.
        processing_class ([`~vapi_trl.models.ImageTokenPolicyProcessor`], tokenizer or processor, *optional*):
            The family processor (`LlamaGenProcessor`, `VARProcessor`, `JanusImageGenerationProcessor`) that turns
            rows into the policy's condition tensors and holds the image tokenizer; the trainer calls it, never the
            policy. Or, as before 0.2, the text tokenizer/encoder of a prompt-conditioned policy (none for
            class-conditional ones), from which `policy.processor_class.from_policy` builds it. The text part is
            saved with checkpoints, the image tokenizer never.
    """

    _tag_names = ["trl", "vapi", "image-generation"]
    _name = "VA-π"
    _paper = {
        "title": "VA-π: Variational Policy Alignment for Pixel-Aware Autoregressive Generation",
        "id": "2512.19680",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{vapi2025,
                title        = {{VA-π: Variational Policy Alignment for Pixel-Aware Autoregressive Generation}},
                year         = 2025,
                eprint       = {arXiv:2512.19680},
            }"""),
    }

    def __init__(
        self,
        model: PreTrainedModel,
        args: VAPiConfig,
        train_dataset: Dataset | IterableDataset,
        image_tokenizer=None,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        eval_dataset: Dataset | IterableDataset | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        peft_config=None,
        lpips_model=None,
        processing_class=None,
    ):
        processor = _check_trainer_inputs(model, args, processing_class, image_tokenizer, train_dataset, eval_dataset)
        # What is saved with checkpoints, as before the family processors: the text tokenizer/encoder (or what was
        # passed in its place), never the image tokenizer.
        text_processor = processor.text_processor if processing_class is processor else processing_class
        extra_rewards = (
            [] if reward_funcs is None else list(reward_funcs) if isinstance(reward_funcs, list) else [reward_funcs]
        )
        if args.reward_weights is not None and len(args.reward_weights) != 1 + len(extra_rewards):
            raise ValueError(
                f"reward_weights has {len(args.reward_weights)} values but there are {1 + len(extra_rewards)} rewards: "
                "give one weight for the pixel-reconstruction reward first, then one per extra reward function."
            )

        # Images are decoded by the trainer, so that a corrupt file skips one image instead of killing the run.
        train_dataset = defer_image_decoding(train_dataset)
        if eval_dataset is not None:
            eval_dataset = defer_image_decoding(eval_dataset)

        if getattr(model, "generation_config", None) is None:
            model.generation_config = GenerationConfig()  # GRPOTrainer writes pad/eos ids into it
        # The reference policy must be copied before PEFT wraps the model; with PEFT, disabling the adapter gives it.
        reference = None
        if args.kl_coef > 0 and peft_config is None and not hasattr(model, "get_base_model"):
            reference = copy.deepcopy(model).eval().requires_grad_(False)

        pixel_reward = _build_pixel_reward(args, lpips_model)
        super().__init__(
            model=model,
            reward_funcs=[PixelReconstructionRewardFunc(pixel_reward), *extra_rewards],
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            # GRPO only needs a text tokenizer; any other processor (e.g. T5CaptionEncoder) would be taken for a VLM's.
            processing_class=(
                text_processor if isinstance(text_processor, PreTrainedTokenizerBase) else _placeholder_tokenizer()
            ),
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
        )
        # A text processor (prompt-conditioned policies) is saved with checkpoints; the placeholder is not. The image
        # tokenizer is frozen and stays with the base model.
        self.processing_class = text_processor
        self.processor = processor

        device = self.accelerator.device
        # Frozen modules are trainer attributes: never prepared (no DDP/DeepSpeed/FSDP wrapping), never optimised,
        # never saved. Every rank holds a full copy.
        self.image_tokenizer = processor.image_tokenizer.to(device)
        self.image_tokenizer.decode_chunk_size = args.decode_chunk_size
        self.pixel_reward = pixel_reward.to(device)
        self.extra_reward_funcs = extra_rewards
        self.ref_model = None
        if args.kl_coef > 0 and reference is not None:
            self.ref_model = self.accelerator.prepare_model(reference, evaluation_mode=True)
        self._sample_grids = SampleGridLogger(args)
        self._skipped_images = 0
        self._step_guard = NonFiniteStepGuard(self)
        self.add_callback(self._step_guard)

    # ------------------------------------------------------------------------------------------------------------
    # Sampling, decoding and scoring
    # ------------------------------------------------------------------------------------------------------------

    @property
    def policy(self) -> PreTrainedModel:
        """The unwrapped policy (the base model under PEFT)."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _condition(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Policy keyword arguments for the condition of each image (e.g. `class_labels` `[U]`), from the family
        processor. Never dropped here: condition dropout belongs to the loss forward (`_compute_loss`), never to
        sampling."""
        return self.processor.prepare_condition(rows, device=self.accelerator.device)

    def _targets(self, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Original images `[U, 3, H, W]` in [-1, 1], their clean tokens x* `[U, N]`, and a `[U]` bool mask of the
        images that decoded. An image file that cannot be decoded is logged and replaced by a blank stand-in whose
        group gets zero advantages and no CE (counted as `skipped_images`)."""
        device = self.accelerator.device
        size = self.image_tokenizer.image_size
        images, valid = [], []
        for row in rows:
            value = row["image"]
            try:
                # Encoded rows (`defer_image_decoding`) are decoded here; decoded images and arrays go to `preprocess`.
                image = decode_image(value) if is_encoded_image(value) else value
            except ImageDecodeError as error:
                self._skipped_images += 1
                logger.warning(
                    "Skipping an image that cannot be decoded (%s: %s); %d skipped so far.",
                    describe_image(value),
                    error,
                    self._skipped_images,
                )
                image = None
            valid.append(image is not None)
            images.append(PIL.Image.new("RGB", (size, size)) if image is None else image)
        valid = torch.tensor(valid, dtype=torch.bool, device=device)
        with profiling_context(self, "preprocess"):
            pixels = self.image_tokenizer.preprocess(images).to(device)
        if "gt_ids" in rows[0] and rows[0]["gt_ids"] is not None:
            target_ids = torch.as_tensor([list(row["gt_ids"]) for row in rows], dtype=torch.long, device=device)
            expected = (len(rows), self.policy.num_image_tokens)
            if tuple(target_ids.shape) != expected:
                raise ValueError(
                    f"gt_ids have shape {tuple(target_ids.shape)}, expected {expected}: re-extract them with the "
                    "same image tokenizer and resolution as the policy."
                )
            codebook_size = self.policy.codebook_size
            if target_ids.numel() and (target_ids.min() < 0 or target_ids.max() >= codebook_size):
                raise ValueError(
                    f"gt_ids hold codes in [{target_ids.min().item()}, {target_ids.max().item()}], outside the image "
                    f"codebook [0, {codebook_size}): re-extract them with the policy's image tokenizer "
                    "(`vapi-trl tokenize`)."
                )
        else:
            with profiling_context(self, "vq_encode"):
                target_ids = self.image_tokenizer.encode(pixels)
        return pixels, target_ids, valid

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Teacher-forced sampling, decoding, pixel rewards and group advantages for a local generation batch.

        `inputs` holds U·G rows, each image repeated G times in a row (TRL's `RepeatSampler`). The result is a
        [`~vapi_trl.batch.StepBatch`] with ONE row per image, as the flat dict TRL buffers (`StepBatch.to_dict`):
        `condition.<name>` (e.g. `condition.class_labels` `[U]`), `context_ids` `[U, N−1]`, `target_ids` `[U, N]`,
        `completion_ids` `[U, G, N]`, `old_per_token_logps` `[U, G, N]`, `advantages` `[U, G]`, `valid` `[U]` (and
        `ref_per_token_logps` with the KL term).
        """
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        if len(inputs) % num_generations:
            raise ValueError(
                f"got {len(inputs)} rows, not a multiple of num_generations={num_generations}: a group of G samples "
                "would be split. Make per_device_train_batch_size a multiple of num_generations."
            )
        rows = inputs[::num_generations]
        args = self.args

        target_pixels, target_ids, valid = self._targets(rows)
        condition = self._condition(rows)
        context_ids = corrupt_context(target_ids, args.context_noise_prob, self.policy.codebook_size)
        logits, log_probs, completion_ids, old_logps = self._sample(condition, context_ids, num_generations)
        ref_logps = None
        if args.kl_coef > 0:
            ref_logps = self._reference_log_probs(condition, context_ids, completion_ids)

        decoded, terms, rewards = self._decode_and_reward(inputs, completion_ids, target_pixels)
        advantages = group_advantages(rewards, std_eps=args.adv_std_eps, clip=args.adv_clip)
        advantages = torch.where(valid[:, None], advantages, torch.zeros_like(advantages))
        if not torch.isfinite(advantages).all():  # the loss, hence the gradients, will be non-finite
            logger.warning("Non-finite rewards in this batch; the optimizer step will be skipped.")
        elif not torch.isfinite(rewards).all():
            logger.warning(
                "Non-finite rewards in groups whose advantages are zero (all G rewards equal, or an undecodable "
                "image); they do not affect this step."
            )

        self._log_generation_metrics(mode, terms, rewards, advantages, logits, log_probs, target_ids)
        if mode == "train" and self._sample_grids.is_due(self.state.global_step, self.accelerator.is_main_process):
            self._sample_grids.buffer(target_pixels, target_ids, decoded, decode=self.image_tokenizer.decode)

        # In `StepBatch` field order: condition, context, targets, samples, their log-probs, advantages, valid, ref.
        batch = StepBatch(condition, context_ids, target_ids, completion_ids, old_logps, advantages, valid, ref_logps)
        return batch.to(self.accelerator.device).to_dict()

    @torch.no_grad()
    def _sample(self, condition: dict[str, torch.Tensor], context_ids: torch.Tensor, num_generations: int):
        """One teacher-forced no-grad forward for U images and G draws each: `logits` `[U, N, K]`, the filtered
        `log_probs` `[U, N, K]`, `completion_ids` `[U, G, N]` and their log-probabilities `[U, G, N]`."""
        # Sampling runs in eval mode (no dropout of any kind), whatever the loss forward does (issue 12).
        with eval_mode(self.model), self.accelerator.autocast(), profiling_context(self, "sampling_forward"):
            logits = self.model(**condition, context_ids=context_ids, cfg_scale=self.args.cfg_scale).logits
            if torch.isfinite(logits).all():
                log_probs = filtered_log_probs(logits, self.temperature, self.top_k, self.top_p)
            else:
                # Sampling needs a valid distribution: draw uniformly. The loss pass sees the same non-finite logits,
                # so the gradients are non-finite and `NonFiniteStepGuard` skips the optimizer step.
                logger.warning("The policy produced non-finite logits; this step will be skipped.")
                log_probs = torch.full_like(logits, -math.log(logits.shape[-1]))
            completion_ids, old_logps = sample_groups(log_probs, num_generations)
        return logits, log_probs, completion_ids, old_logps

    def _decode_and_reward(self, inputs, completion_ids: torch.Tensor, target_pixels: torch.Tensor):
        """Decode the samples `[U, G, N]` to `[U, G, 3, H, W]` and score them: the pixel terms and the total reward
        `[U, G]` (pixel reward plus the extra reward functions)."""
        device = self.accelerator.device
        # decode_dtype="bfloat16": bf16 autocast for the frozen VQ decode and LPIPS (error measured in
        # docs/benchmarks.md); rewards come out fp32 either way.
        bf16_decode = self.args.decode_dtype == "bfloat16"
        with profiling_context(self, "vq_decode"), torch.autocast(device.type, torch.bfloat16, enabled=bf16_decode):
            decoded = self.image_tokenizer.decode(completion_ids.flatten(0, 1))
        decoded = decoded.view(*completion_ids.shape[:2], *decoded.shape[1:])
        with profiling_context(self, "pixel_reward"), torch.autocast(device.type, torch.bfloat16, enabled=bf16_decode):
            terms = self.pixel_reward(decoded, target_pixels)
        rewards = self._combine_rewards(terms.total, inputs, decoded, completion_ids)
        return decoded, terms, rewards

    @torch.no_grad()
    def _reference_log_probs(self, condition, context_ids, completion_ids) -> torch.Tensor:
        with self.accelerator.autocast(), eval_mode(self.model):
            if self.ref_model is not None:
                logits = self.ref_model(**condition, context_ids=context_ids, cfg_scale=self.args.cfg_scale).logits
            else:
                with self.accelerator.unwrap_model(self.model).disable_adapter():
                    logits = self.model(**condition, context_ids=context_ids, cfg_scale=self.args.cfg_scale).logits
        log_probs = filtered_log_probs(logits, self.temperature, self.top_k, self.top_p)
        return gather_sample_log_probs(log_probs, completion_ids)

    def _combine_rewards(self, pixel_reward, inputs, decoded, completion_ids) -> torch.Tensor:
        """Weighted sum `[U, G]` of the pixel reward and the extra reward functions (TRL convention)."""
        weights = self.reward_weights.to(pixel_reward.device)
        total = weights[0] * pixel_reward
        if not self.extra_reward_funcs:
            return total
        num_images, num_generations = pixel_reward.shape
        prompts = [row.get("prompt", row.get("class_label")) for row in inputs]
        completions = list(decoded.flatten(0, 1).float())
        completion_id_list = list(completion_ids.flatten(0, 1))
        columns = {key: [row[key] for row in inputs] for key in inputs[0] if key not in ("prompt", "image")}
        # TRL's `_calculate_rewards` gathers rewards across processes; VA-π groups never span processes, so extra
        # rewards are scored locally.
        for index, func in enumerate(self.extra_reward_funcs, start=1):
            name = self.reward_func_names[index]
            with profiling_context(self, name):
                values = func(prompts=prompts, completions=completions, completion_ids=completion_id_list, **columns)
            if len(values) != len(inputs):
                raise ValueError(f"reward function {name!r} returned {len(values)} values for {len(inputs)} samples.")
            # TRL's convention (GRPOTrainer turns `None` into NaN and sums with `nansum`): `None` or NaN means "does
            # not apply to this sample" and adds nothing; ±inf is a fault, which skips the step.
            values = torch.tensor([extra_reward_value(v, name) for v in values], device=total.device)
            applies = ~torch.isnan(values)
            self._metrics["train" if self.model.training else "eval"][f"rewards/{name}/mean"].append(
                gather(values).nanmean().item()
            )
            contribution = (weights[index] * values).masked_fill(~applies, 0.0)
            total = total + contribution.view(num_images, num_generations)
        return total

    def _log_generation_metrics(self, mode, terms, rewards, advantages, logits, log_probs, target_ids):
        metrics = self._metrics[mode]

        def world_mean(value: torch.Tensor) -> float:
            return gather(value.detach().float().reshape(-1)).nanmean().item()

        metrics["reward"].append(world_mean(rewards))
        metrics["reward_std"].append(world_mean(rewards.std(dim=1)))
        metrics["frac_reward_zero_std"].append(world_mean((rewards.std(dim=1) == 0).float()))
        metrics["rewards/pixel_reconstruction/mean"].append(world_mean(terms.total))
        metrics[self.args.pixel_loss].append(world_mean(terms.pixel))
        if terms.lpips is not None:
            metrics["lpips"].append(world_mean(terms.lpips))
        metrics["advantages/mean"].append(world_mean(advantages))
        metrics["advantages/abs_max"].append(gather(advantages.abs().amax().reshape(1)).max().item())
        metrics["entropy"].append(world_mean(token_entropy(log_probs).reshape(1)))
        metrics["token_accuracy"].append(world_mean((logits.argmax(-1) == target_ids).float()))

    # ------------------------------------------------------------------------------------------------------------
    # Loss
    # ------------------------------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One policy forward per image for all its G samples: clipped surrogate + ce_coef·CE (+ kl_coef·KL).

        `inputs` is a (micro-batch slice of a) flat `StepBatch` dict; only its `condition.*` tensors reach the policy
        as condition kwargs."""
        args = self.args
        mode = "train" if self.model.training else "eval"
        batch = StepBatch.from_dict(inputs)
        condition, context_ids = batch.condition, batch.context_ids
        train_forward = args.loss_forward_mode == "train"
        if mode == "train" and train_forward and args.label_dropout > 0:
            # One draw per image: the G samples of an image share its loss forward, hence its condition.
            drop = torch.rand(context_ids.shape[0], device=context_ids.device) < args.label_dropout
            condition = self.policy.drop_condition(condition, drop)
        # "train": the policy's own dropout is live (the model is in train mode under `Trainer.train`); one dropout
        # mask per image serves its G samples, with the same expected gradient as the official G independent masks.
        with contextlib.nullcontext() if train_forward else dropout_disabled(model):
            logits = model(**condition, context_ids=context_ids, cfg_scale=args.cfg_scale).logits
        log_probs = filtered_log_probs(logits, self.temperature, self.top_k, self.top_p)
        new_logps = gather_sample_log_probs(log_probs, batch.completion_ids)
        old_logps, advantages, target_ids = batch.old_per_token_logps, batch.advantages, batch.target_ids
        ref_logps, valid = batch.ref_per_token_logps, batch.valid
        none_valid = not valid.any()
        if not valid.all() and not none_valid:
            # Images that failed to decode have stand-in targets: their groups leave the surrogate's numerator AND
            # its denominator, and the prior.
            logits, new_logps, old_logps = logits[valid], new_logps[valid], old_logps[valid]
            advantages, target_ids = advantages[valid], target_ids[valid]
            ref_logps = ref_logps[valid] if ref_logps is not None else None
        policy_loss, stats = clipped_surrogate(new_logps, old_logps, advantages, self.epsilon_low, self.epsilon_high)
        ce = ce_prior(logits, target_ids)
        if none_valid:  # still computed, so that every process takes part in the same collectives below
            policy_loss, ce = policy_loss * 0.0, ce * 0.0
        loss = policy_loss + args.ce_coef * ce
        if args.kl_coef > 0:
            kl = k3_kl(new_logps, ref_logps) * (0.0 if none_valid else 1.0)
            loss = loss + args.kl_coef * kl
            self._metrics[mode]["kl"].append(gather(kl.detach().reshape(1)).mean().item())

        metrics = self._metrics[mode]
        for name, value in (
            ("policy_loss", policy_loss),
            ("ce", ce),
            ("clip_ratio/low_mean", stats.clip_ratio_low),
            ("clip_ratio/high_mean", stats.clip_ratio_high),
            ("clip_ratio/region_mean", stats.clip_ratio_region),
        ):
            metrics[name].append(gather(value.detach().reshape(1)).mean().item())
        metrics["ratio/min"].append(gather(stats.ratio_min.reshape(1)).min().item())
        metrics["ratio/max"].append(gather(stats.ratio_max.reshape(1)).max().item())
        # Set by the training loop (the last accumulation window may be shorter); absent outside `train()`.
        accumulation = getattr(self, "current_gradient_accumulation_steps", args.gradient_accumulation_steps)
        normalizer = accumulation if mode == "train" else 1.0
        return loss / normalizer

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`Trainer.train`; with `resume_from_checkpoint=True`, resume from the last checkpoint whose save completed
        (a folder half-written by a process killed while saving is skipped)."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint found in {self.args.output_dir} to resume from.")
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        raise NotImplementedError(
            "VAPiTrainer scores image tokens from one teacher-forced pass per image (`_compute_loss`); GRPO's text "
            "log-prob path does not apply."
        )

    # ------------------------------------------------------------------------------------------------------------
    # Image logging and model card
    # ------------------------------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """`GRPOTrainer.log`, with the skipped-step and skipped-image counts in training, then the buffered sample
        grid (`SampleGridLogger`)."""
        if self.model.training:
            logs["skipped_steps"] = self._step_guard.skipped_steps
            logs["skipped_images"] = self._skipped_images
        super().log(logs, start_time)
        if self.accelerator.is_main_process:
            self._sample_grids.write(self.state.global_step, self.callback_handler.callbacks)

    def create_model_card(
        self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None
    ) -> None:
        """Write a `README.md` model card for the aligned policy to `args.output_dir` (see `model_card_text`)."""
        if not self.is_world_process_zero():
            return
        from huggingface_hub import ModelCard

        tag_set = set(self._tag_names) | ({tags} if isinstance(tags, str) else set(tags or []))
        content = model_card_text(
            self.policy, self.args, self.state, self._paper, sorted(tag_set), model_name, dataset_name
        )
        ModelCard(content).save(os.path.join(self.args.output_dir, "README.md"))


__all__ = ["VAPiTrainer"]
