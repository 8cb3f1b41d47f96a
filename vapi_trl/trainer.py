"""VA-π trainer: TRL's GRPOTrainer with teacher-forced sampling and pixel-reconstruction rewards."""

import copy
import contextlib
import io
import logging
import math
import os
import textwrap
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import gather
import PIL.Image
from datasets import Dataset, IterableDataset
from datasets import Image as ImageFeature
from tokenizers import Tokenizer, models
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.extras.profiling import profiling_context
from trl.trainer.utils import get_config_model_id

from .checkpoints import last_complete_checkpoint
from .config import VAPiConfig
from .dropout import dropout_disabled, eval_mode
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
from .rewards import PixelReconstructionReward, PixelReconstructionRewardFunc, build_lpips


logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float]]

# Keys of a buffered VA-π step that are not policy condition inputs.
_STEP_KEYS = frozenset(
    (
        "context_ids", "target_ids", "completion_ids", "old_per_token_logps", "advantages", "ref_per_token_logps",
        "valid",
    )
)  # fmt: skip


def _placeholder_tokenizer() -> PreTrainedTokenizerFast:
    # GRPOTrainer needs a text tokenizer (it loads one from the model id when none is given, and writes its pad/eos ids
    # into the model config). A one-word vocabulary without special tokens satisfies it and writes no ids.
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unused>": 0}, unk_token="<unused>")))


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
    from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage

    policy = LlamaGenForClassToImage.from_pretrained("path/to/llamagen-c2i")
    image_tokenizer = ImageTokenizerProcessor.from_pretrained("path/to/vq-tokenizer")
    dataset = load_dataset("imagefolder", data_dir="train/")["train"].rename_column("label", "class_label")
    # LlamaGen C2I recipe per GPU: one image × G = 8 samples per micro-batch, 16 accumulation steps, 100 steps.
    args = VAPiConfig(
        output_dir="out", learning_rate=1e-6, per_device_train_batch_size=8, num_generations=8,
        gradient_accumulation_steps=16, max_steps=100, context_noise_prob=0.0, loss_forward_mode="train",
    )
    trainer = VAPiTrainer(model=policy, args=args, train_dataset=dataset, image_tokenizer=image_tokenizer)
    trainer.train()
    ```

    Args:
        model ([`~transformers.PreTrainedModel`]):
            The policy. Its forward takes the condition kwargs and `context_ids` `[B, N−1]` (and `cfg_scale`) and
            returns `logits` `[B, N, K]` over the codebook, where index t predicts image token t. It exposes
            `codebook_size`, `num_image_tokens`, `condition_columns` (dataset columns holding the condition, e.g.
            `("class_label",)`), `prepare_condition(rows, processing_class) -> dict[str, Tensor]` and
            `drop_condition(condition, drop_mask) -> dict[str, Tensor]` (the null condition, for label dropout).
        args ([`VAPiConfig`]):
            Training configuration; `learning_rate` must be set.
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Rows with an `image` column (PIL images, any mode and size) and a `class_label` column (int in
            `[0, num_classes)`). An optional `gt_ids` column of pre-extracted tokens `[N]` skips the VQ encode.
        image_tokenizer ([`~vapi_trl.models.ImageTokenizerProcessor`]):
            Frozen VQ tokenizer: `preprocess`, `encode`, `decode`. Kept out of the optimizer, of DDP/DeepSpeed
            wrapping and of saved checkpoints.
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
        processing_class (tokenizer or processor, *optional*):
            The text tokenizer/processor of a prompt-conditioned policy, handed to `prepare_condition` and saved with
            checkpoints. Class-conditional policies need none.
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
        if not isinstance(args, VAPiConfig):
            raise TypeError(f"`args` must be a VAPiConfig, got {type(args).__name__}.")
        if isinstance(model, str):
            raise TypeError(
                "VAPiTrainer needs an instantiated policy (e.g. `LlamaGenForClassToImage.from_pretrained(path)`), "
                f"got the string {model!r}."
            )
        if image_tokenizer is None:
            raise ValueError(
                "VAPiTrainer needs the frozen `image_tokenizer` (an `ImageTokenizerProcessor`) that produced the "
                "policy's codes, e.g. `ImageTokenizerProcessor.from_pretrained(path)`."
            )
        policy = model.get_base_model() if hasattr(model, "get_base_model") else model
        image_tokenizer.check_compatible(policy.codebook_size, policy.num_image_tokens)
        condition_columns = tuple(getattr(policy, "condition_columns", ("class_label",)))
        _check_dataset_columns(train_dataset, "train_dataset", condition_columns)
        if eval_dataset is not None:
            _check_dataset_columns(eval_dataset, "eval_dataset", condition_columns)

        extra_rewards = (
            [] if reward_funcs is None else list(reward_funcs) if isinstance(reward_funcs, list) else [reward_funcs]
        )
        if args.reward_weights is not None and len(args.reward_weights) != 1 + len(extra_rewards):
            raise ValueError(
                f"reward_weights has {len(args.reward_weights)} values but there are {1 + len(extra_rewards)} rewards: "
                "give one weight for the pixel-reconstruction reward first, then one per extra reward function."
            )

        # Images are decoded by the trainer, so that a corrupt file skips one image instead of killing the run.
        train_dataset = _defer_image_decoding(train_dataset)
        if eval_dataset is not None:
            eval_dataset = _defer_image_decoding(eval_dataset)

        if getattr(model, "generation_config", None) is None:
            model.generation_config = GenerationConfig()  # GRPOTrainer writes pad/eos ids into it
        # The reference policy must be copied before PEFT wraps the model; with PEFT, disabling the adapter gives it.
        reference = None
        if args.kl_coef > 0 and peft_config is None and not hasattr(model, "get_base_model"):
            reference = copy.deepcopy(model).eval().requires_grad_(False)

        if lpips_model is None and args.lpips_weight > 0:
            lpips_model = build_lpips(args.lpips_net, random_backbone=args.lpips_random_backbone)
        if lpips_model is not None:
            lpips_model = lpips_model.eval().requires_grad_(False)
        pixel_reward = PixelReconstructionReward(
            pixel_loss=args.pixel_loss,
            pixel_weight=args.pixel_weight,
            lpips_weight=args.lpips_weight,
            lpips_model=lpips_model,
            chunk_size=args.decode_chunk_size,
        )

        super().__init__(
            model=model,
            reward_funcs=[PixelReconstructionRewardFunc(pixel_reward), *extra_rewards],
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            # GRPO only needs a text tokenizer; any other processor (e.g. T5CaptionEncoder) would be taken for a VLM's.
            processing_class=(
                processing_class if isinstance(processing_class, PreTrainedTokenizerBase) else _placeholder_tokenizer()
            ),
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
        )
        # A text processor (prompt-conditioned policies) is saved with checkpoints; the placeholder is not. The image
        # tokenizer is frozen and stays with the base model.
        self._text_processor = processing_class
        self.processing_class = processing_class

        device = self.accelerator.device
        # Frozen modules are trainer attributes: never prepared (no DDP/DeepSpeed/FSDP wrapping), never optimised,
        # never saved. Every rank holds a full copy.
        self.image_tokenizer = image_tokenizer.to(device)
        self.image_tokenizer.decode_chunk_size = args.decode_chunk_size
        self.pixel_reward = pixel_reward.to(device)
        self.extra_reward_funcs = extra_rewards
        self.ref_model = None
        if args.kl_coef > 0 and reference is not None:
            self.ref_model = self.accelerator.prepare_model(reference, evaluation_mode=True)
        self._image_log = None
        self._skipped_steps = 0
        self._consecutive_bad_steps = 0
        self._skipped_images = 0
        self.add_callback(_NonFiniteStepGuard(self))

    # ------------------------------------------------------------------------------------------------------------
    # Sampling, decoding and scoring
    # ------------------------------------------------------------------------------------------------------------

    @property
    def policy(self) -> PreTrainedModel:
        """The unwrapped policy (the base model under PEFT)."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _condition(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Policy keyword arguments for the condition of each image (e.g. `class_labels` `[U]`), from the policy.
        Never dropped here: condition dropout belongs to the loss forward (`_compute_loss`), never to sampling."""
        condition = self.policy.prepare_condition(rows, processing_class=self._text_processor)
        return {key: value.to(self.accelerator.device) for key, value in condition.items()}

    def _targets(self, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Original images `[U, 3, H, W]` in [-1, 1], their clean tokens x* `[U, N]`, and a `[U]` bool mask of the
        images that decoded. An image file that cannot be decoded is logged and replaced by a blank stand-in whose
        group gets zero advantages and no CE (counted as `skipped_images`)."""
        device = self.accelerator.device
        size = self.image_tokenizer.image_size
        images, valid = [], []
        for row in rows:
            image = _decode_image(row["image"])
            valid.append(image is not None)
            if image is None:
                self._skipped_images += 1
                logger.warning(
                    "Skipping an image that cannot be decoded (%s); %d skipped so far.",
                    _describe_image(row["image"]),
                    self._skipped_images,
                )
                image = PIL.Image.new("RGB", (size, size))
            images.append(image)
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

        `inputs` holds U·G rows, each image repeated G times in a row (TRL's `RepeatSampler`). The result has ONE row per
        image: `class_labels` `[U]`, `context_ids` `[U, N−1]`, `target_ids` `[U, N]`, `completion_ids` `[U, G, N]`,
        `old_per_token_logps` `[U, G, N]`, `advantages` `[U, G]` (and `ref_per_token_logps` with the KL term).
        """
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        if len(inputs) % num_generations:
            raise ValueError(
                f"got {len(inputs)} rows, not a multiple of num_generations={num_generations}: a group of G samples "
                "would be split. Make per_device_train_batch_size a multiple of num_generations."
            )
        rows = inputs[::num_generations]
        policy = self.policy
        device = self.accelerator.device
        args = self.args

        target_pixels, target_ids, valid = self._targets(rows)
        condition = self._condition(rows)
        context_ids = corrupt_context(target_ids, args.context_noise_prob, policy.codebook_size)

        # Sampling runs in eval mode (no dropout of any kind), whatever the loss forward does (issue 12).
        with (
            torch.no_grad(),
            eval_mode(self.model),
            self.accelerator.autocast(),
            profiling_context(self, "sampling_forward"),
        ):
            logits = self.model(**condition, context_ids=context_ids, cfg_scale=args.cfg_scale).logits
            if torch.isfinite(logits).all():
                log_probs = filtered_log_probs(logits, self.temperature, self.top_k, self.top_p)
            else:
                # Sampling needs a valid distribution: draw uniformly. The loss pass sees the same non-finite logits,
                # so the gradients are non-finite and `_NonFiniteStepGuard` skips the optimizer step.
                logger.warning("The policy produced non-finite logits; this step will be skipped.")
                log_probs = torch.full_like(logits, -math.log(logits.shape[-1]))
            completion_ids, old_logps = sample_groups(log_probs, num_generations)
        ref_logps = None
        if args.kl_coef > 0:
            ref_logps = self._reference_log_probs(condition, context_ids, completion_ids)

        # decode_dtype="bfloat16": bf16 autocast for the frozen VQ decode and LPIPS (error measured in
        # docs/benchmarks.md); rewards come out fp32 either way.
        bf16_decode = args.decode_dtype == "bfloat16"
        with profiling_context(self, "vq_decode"), torch.autocast(device.type, torch.bfloat16, enabled=bf16_decode):
            decoded = self.image_tokenizer.decode(completion_ids.flatten(0, 1))
        decoded = decoded.view(*completion_ids.shape[:2], *decoded.shape[1:])
        with profiling_context(self, "pixel_reward"), torch.autocast(device.type, torch.bfloat16, enabled=bf16_decode):
            terms = self.pixel_reward(decoded, target_pixels)
        rewards = self._combine_rewards(terms.total, inputs, decoded, completion_ids)
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
        if mode == "train" and self._should_log_images():
            self._buffer_images(target_pixels, target_ids, decoded)

        batch = {
            **condition,
            "context_ids": context_ids,
            "target_ids": target_ids,
            "completion_ids": completion_ids,
            "old_per_token_logps": old_logps,
            "advantages": advantages,
            "valid": valid,
        }
        if ref_logps is not None:
            batch["ref_per_token_logps"] = ref_logps
        return {key: value.to(device) for key, value in batch.items()}

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
            values = torch.tensor([_reward_value(v, name) for v in values], device=total.device)
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
        """One policy forward per image for all its G samples: clipped surrogate + ce_coef·CE (+ kl_coef·KL)."""
        args = self.args
        mode = "train" if self.model.training else "eval"
        condition = {key: value for key, value in inputs.items() if key not in _STEP_KEYS}
        train_forward = args.loss_forward_mode == "train"
        if mode == "train" and train_forward and args.label_dropout > 0:
            # One draw per image: the G samples of an image share its loss forward, hence its condition.
            drop = torch.rand(inputs["context_ids"].shape[0], device=inputs["context_ids"].device) < args.label_dropout
            condition = self.policy.drop_condition(condition, drop)
        # "train": the policy's own dropout is live (the model is in train mode under `Trainer.train`); one dropout
        # mask per image serves its G samples, with the same expected gradient as the official G independent masks.
        with contextlib.nullcontext() if train_forward else dropout_disabled(model):
            logits = model(**condition, context_ids=inputs["context_ids"], cfg_scale=args.cfg_scale).logits
        log_probs = filtered_log_probs(logits, self.temperature, self.top_k, self.top_p)
        new_logps = gather_sample_log_probs(log_probs, inputs["completion_ids"])
        old_logps, advantages, target_ids = inputs["old_per_token_logps"], inputs["advantages"], inputs["target_ids"]
        ref_logps = inputs.get("ref_per_token_logps")
        valid = inputs.get("valid")
        none_valid = valid is not None and not valid.any()
        if valid is not None and not valid.all() and not none_valid:
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

    def _image_backends(self) -> list[str]:
        report_to = self.args.report_to or []
        return [name for name in ("tensorboard", "wandb", "trackio") if name in report_to]

    def _should_log_images(self) -> bool:
        if self.args.num_images_to_log <= 0 or not self.accelerator.is_main_process or not self._image_backends():
            return False
        logging_steps = max(int(self.args.logging_steps), 1) if self.args.logging_steps >= 1 else 1
        return (self.state.global_step + 1) % logging_steps == 0 or self.state.global_step == 0

    @torch.no_grad()
    def _buffer_images(self, target_pixels, target_ids, decoded):
        """Keep a grid of rows `ground truth | VQ reconstruction | samples` for the next `log` call."""
        from torchvision.utils import make_grid

        count = min(self.args.num_images_to_log, target_pixels.shape[0])
        reconstruction = self.image_tokenizer.decode(target_ids[:count])
        samples = decoded[:count, : min(decoded.shape[1], 6)]
        rows = torch.cat([target_pixels[:count, None], reconstruction[:, None], samples], dim=1)
        grid = make_grid(
            rows.flatten(0, 1).float().clamp(-1, 1), nrow=rows.shape[1], normalize=True, value_range=(-1, 1)
        )
        self._image_log = grid.cpu()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:
            logs["skipped_steps"] = self._skipped_steps
            logs["skipped_images"] = self._skipped_images
        super().log(logs, start_time)
        if self._image_log is None or not self.accelerator.is_main_process:
            return
        grid, self._image_log = self._image_log, None
        caption = "ground truth | VQ reconstruction | teacher-forced samples"
        for backend in self._image_backends():
            if backend == "tensorboard":
                from transformers.integrations import TensorBoardCallback

                for callback in self.callback_handler.callbacks:
                    if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                        callback.tb_writer.add_image("train/samples", grid, self.state.global_step)
                        callback.tb_writer.flush()
            elif backend == "wandb":
                import wandb

                if wandb.run is not None:
                    wandb.log({"train/samples": wandb.Image(grid, caption=caption)}, step=self.state.global_step)
            elif backend == "trackio":
                import trackio

                trackio.log({"train/samples": trackio.Image(grid.permute(1, 2, 0).numpy(), caption=caption)})

    def create_model_card(
        self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None
    ) -> None:
        """Write a `README.md` model card for the aligned policy to `args.output_dir`."""
        if not self.is_world_process_zero():
            return
        from huggingface_hub import ModelCard, ModelCardData

        base_model = get_config_model_id(self.policy.config)
        base_model = base_model if base_model and not os.path.isdir(base_model) else None
        tag_set = set(self._tag_names) | ({tags} if isinstance(tags, str) else set(tags or []))
        args = self.args
        # Prompt-conditioned policies (condition column `prompt`) are text-to-image; class-conditional ones are not.
        text_to_image = "prompt" in tuple(getattr(self.policy, "condition_columns", ()))
        card_data = ModelCardData(
            base_model=base_model,
            tags=sorted(tag_set),
            pipeline_tag="text-to-image" if text_to_image else "unconditional-image-generation",
            library_name="transformers",
            datasets=[dataset_name] if dataset_name else None,
        )
        title = model_name or os.path.basename(os.path.normpath(args.output_dir))
        origin = f", starting from `{base_model}`" if base_model else ""
        paper = f"[{self._paper['title']}](https://huggingface.co/papers/{self._paper['id']})"
        reward = f"−({args.pixel_weight}·{args.pixel_loss.upper()} + {args.lpips_weight}·LPIPS-{args.lpips_net})"
        lines = [
            "---",
            card_data.to_yaml(),
            "---",
            "",
            f"# {title}",
            "",
            f"This autoregressive image generator was post-trained with **VA-π** ({paper}) using vapi-trl{origin}.",
            "It generates image tokens: decode them with the same frozen VQ image tokenizer as the base model"
            + (
                " (the `vqmodel` inside this checkpoint)."
                if hasattr(getattr(self.policy, "model", None), "vqmodel")
                else ", which this checkpoint does not contain."
            ),
            "",
            "## Training recipe",
            "",
            "| setting | value |",
            "|---|---|",
            f"| samples per image G | {args.num_generations} |",
            f"| context noise ξ | {args.context_noise_prob} |",
            f"| CE prior weight β | {args.ce_coef} |",
            f"| clip ε | {args.epsilon} |",
            f"| reward | {reward} |",
            f"| learning rate | {args.learning_rate} |",
            f"| optimizer steps | {self.state.global_step} |",
            *([f"| dataset | {dataset_name} |"] if dataset_name else []),
            "",
            *_final_metrics_lines(self.state.log_history),
            "## Citation",
            "",
            "```bibtex",
            self._paper["citation"],
            "```",
            "",
        ]
        content = "\n".join(lines)
        ModelCard(content).save(os.path.join(args.output_dir, "README.md"))


def _final_metrics_lines(log_history: list[dict[str, float]]) -> list[str]:
    """Model-card table of the last logged value of the main training metrics (empty before any logging)."""
    keys = ("reward", "mse", "l1", "lpips", "ce", "policy_loss", "token_accuracy", "train_loss")
    last = {key: entry[key] for entry in log_history for key in keys if key in entry}
    if not last:
        return []
    return [
        "## Final training metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {key} | {last[key]:.4g} |" for key in keys if key in last],
        "",
    ]


def _reward_value(value: Any, name: str) -> float:
    """One value returned by an extra reward function as a float (`None`: NaN, "does not apply", masked by caller)."""
    if value is None:
        return float("nan")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(
            f"reward function {name!r} returned {value!r}: each value must be a number, or None for a sample the "
            f"function does not apply to; got {type(value).__name__}."
        )
    return float(value)


class _NonFiniteStepGuard(TrainerCallback):
    """Skips optimizer steps whose gradients are not finite, so that weights and optimizer state never see NaN.

    Runs between gradient clipping and `optimizer.step()`. Setting every gradient to None makes AdamW leave the
    parameters and its moments untouched. The decision is made on all processes' flags, so ranks stay in step. FSDP2
    gradients are sharded DTensors: each rank checks its local shard. Under DeepSpeed the step has already run inside
    `accelerator.backward` (`engine.step()`), on gradients partitioned across ranks (`p.grad` is None): DeepSpeed's
    ZeRO optimizers skip a step whose gradient norm is not finite themselves (bf16 `check_grad_overflow`, on by
    default, and the grad-norm check under clipping), agreed across ranks, and `engine.was_step_applied()` says so;
    the guard counts those steps and stops the run in the same way.
    """

    def __init__(self, trainer: "VAPiTrainer"):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        trainer = self.trainer
        if trainer.is_deepspeed_enabled:
            bad = not trainer.model_wrapped.was_step_applied()
        else:
            grads = [_local_shard(p.grad) for p in trainer.model.parameters() if p.grad is not None]
            finite = torch.stack([torch.isfinite(g).all() for g in grads]).all() if grads else torch.tensor(True)
            bad = gather(finite.logical_not().float().reshape(1).to(trainer.accelerator.device)).sum().item() > 0
        if not bad:
            trainer._consecutive_bad_steps = 0
            return
        if not trainer.is_deepspeed_enabled:
            trainer.optimizer.zero_grad(set_to_none=True)
        trainer._skipped_steps += 1
        trainer._consecutive_bad_steps += 1
        logger.warning(
            "Skipped optimizer step %d: non-finite gradients (from a non-finite reward, loss or logit). %d "
            "consecutive, %d in total.",
            state.global_step + 1,
            trainer._consecutive_bad_steps,
            trainer._skipped_steps,
        )
        if trainer._consecutive_bad_steps >= args.max_consecutive_bad_steps:
            raise RuntimeError(
                f"{trainer._consecutive_bad_steps} consecutive optimizer steps had non-finite gradients "
                f"(max_consecutive_bad_steps={args.max_consecutive_bad_steps}); the weights are those of step "
                f"{state.global_step}. Check the data and rewards for NaN/inf, lower the learning rate, or train in "
                "fp32; resume from the last checkpoint with resume_from_checkpoint=True."
            )


def _local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly FSDP2-sharded DTensor) gradient."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _defer_image_decoding(dataset):
    """Cast an `Image` column to `decode=False`, so that rows carry the encoded bytes/path and the trainer decodes."""
    if isinstance(dataset, dict):
        return {key: _defer_image_decoding(value) for key, value in dataset.items()}
    features = getattr(dataset, "features", None)
    if features is not None and isinstance(features.get("image"), ImageFeature) and features["image"].decode:
        return dataset.cast_column("image", ImageFeature(decode=False))
    return dataset


def _decode_image(value):
    """A decoded image, or None when an encoded image (bytes or path) cannot be decoded. Other values pass through."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        try:
            source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
            image = PIL.Image.open(source)
            image.load()  # truncated files only fail here
            return image
        except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError):
            return None
    return value


def _describe_image(value) -> str:
    if isinstance(value, dict):
        return f"path={value.get('path')!r}" if value.get("path") else f"{len(value.get('bytes') or b'')} bytes"
    return type(value).__name__


def _check_dataset_columns(dataset, name: str, condition_columns: tuple[str, ...]) -> None:
    if isinstance(dataset, dict):
        for key, value in dataset.items():
            _check_dataset_columns(value, f"{name}[{key!r}]", condition_columns)
        return
    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise TypeError(f"{name} must be a datasets.Dataset or IterableDataset, got {type(dataset).__name__}.")
    columns = dataset.column_names
    if columns is None:  # an IterableDataset with unknown features is checked at the first batch
        return
    missing = [column for column in ("image", *condition_columns) if column not in columns]
    if missing:
        raise ValueError(
            f"{name} is missing the column(s) {missing} (it has {columns}). VA-π needs `image` (the training image) "
            f"and the policy's condition column(s) {list(condition_columns)}; rename yours with "
            "`dataset.rename_column(old, new)`."
        )
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"{name} is empty.")


__all__ = ["VAPiTrainer"]
