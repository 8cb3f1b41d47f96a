"""Training configuration of the VA-π trainer."""

import math
from dataclasses import dataclass, field

from trl import GRPOConfig

from .objective import check_probability
from .rewards import LPIPS_NETS, PIXEL_LOSSES, check_lpips_net, check_pixel_loss
from .sampling import check_sampling_filters, check_temperature


@dataclass
class VAPiConfig(GRPOConfig):
    r"""
    Configuration class for the [`VAPiTrainer`].

    VA-π replaces GRPO's free-running rollouts with teacher-forced sampling: for each image, one forward of the policy
    on a (noisy) ground-truth context gives logits at every image position, `num_generations` token sequences are drawn
    from them in parallel, decoded by the frozen VQ decoder and rewarded by their pixel reconstruction error. Only the
    parameters specific to VA-π are listed here; see [`~trl.GRPOConfig`] and [`~transformers.TrainingArguments`] for
    the rest. `num_generations` (G), `epsilon`/`epsilon_high` (the PPO clip), `temperature`, `top_k`, `top_p` and
    `num_iterations` keep their GRPO meaning.

    Parameters:
        > Parameters that control the teacher-forcing context

        context_noise_prob (`float`, *optional*, defaults to `0.5`):
            ξ, the probability that each context token is replaced by a uniformly random code before the
            teacher-forced pass. Drawn once per image and shared by its G samples and by the CE prior. Recipes: 0.0
            (LlamaGen C2I launcher), 0.5 (paper, LlamaGen T2I), 1.0 (Janus-Pro).
        loss_forward_mode (`str`, *optional*, defaults to `"train"`):
            Mode of the policy in the loss forward. `"train"` (official launchers): the policy's own dropout and
            condition dropout are active in the loss forward only (LlamaGen: dropout 0.1 on embeddings, attention
            output and FFN, and 10%% label/caption dropout), so the PPO ratio carries dropout noise and the null
            condition receives gradient. `"eval"`: every dropout layer is off in the loss forward (deterministic; the
            first-pass ratio is exactly 1). Sampling always runs in eval mode, whatever this is.
        label_dropout (`float`, *optional*, defaults to `0.0`):
            Extra condition dropout applied by the trainer to the loss forward only, in `loss_forward_mode="train"`:
            the probability of replacing an image's condition by the null condition, drawn once per image. For
            families without their own (Janus, VAR); LlamaGen drops labels itself (`config.class_dropout_prob`).
        cfg_scale (`float`, *optional*, defaults to `1.0`):
            Classifier-free guidance scale of the training forwards; 1.0 disables guidance (recipe value).

        > Parameters that control the reward

        pixel_loss (`str`, *optional*, defaults to `"mse"`):
            Pixel term of the reward: `"mse"` or `"l1"`, on the [-1, 1] scale, against the original image.
        pixel_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the pixel term; the reward is `-(pixel_weight * pixel + lpips_weight * lpips)`.
        lpips_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the LPIPS term; 0 disables LPIPS (no perceptual network is built).
        lpips_net (`str`, *optional*, defaults to `"vgg"`):
            LPIPS backbone: `"vgg"` (LlamaGen recipes) or `"alex"` (Janus-Pro recipe).
        lpips_random_backbone (`bool`, *optional*, defaults to `False`):
            Build LPIPS with a randomly initialised backbone instead of the ImageNet weights. Only for tests and
            offline smoke runs: the perceptual term is then meaningless.
        adv_clip (`float` or `None`, *optional*, defaults to `5.0`):
            Clamp group-normalised advantages to ±`adv_clip`. With unbiased std, |A| ≤ (G−1)/√G, so the clamp only
            binds for G ≥ 27. `None` disables it.
        adv_std_eps (`float`, *optional*, defaults to `1e-8`):
            Added to the group standard deviation; groups of identical rewards give zero advantages.

        > Parameters that control the loss

        ce_coef (`float`, *optional*, defaults to `0.1`):
            β, the weight of the cross-entropy of the clean tokens x* given the noisy context (the prior regularizer).
            Named `ce_coef` so it is not confused with GRPO's KL `beta`, which must stay 0.
        kl_coef (`float`, *optional*, defaults to `0.0`):
            Weight of a k3 KL penalty to a frozen copy of the initial policy. A reference model is only built when
            this is positive (official value 0.01).

        > Parameters that control compute and logging

        decode_chunk_size (`int`, *optional*, defaults to `16`):
            Number of token sequences decoded by the VQ decoder (and scored by LPIPS) at once.
        decode_dtype (`str`, *optional*, defaults to `"float32"`):
            Precision of the frozen VQ decode and LPIPS reward: `"float32"`, or `"bfloat16"` (autocast; faster on
            GPUs). Measured on the shipped demo VQ + policy (trained, 32 px, CPU, 16 images × G = 8): bf16 changes
            the MSE reward by 1.3e-4 on average, 0.7% of the within-group reward std (1.9e-2), and the advantages
            by at most 0.035; `benchmarks/gpu_check.py` (part c) measures it at 384 px.
        num_images_to_log (`int`, *optional*, defaults to `4`):
            Number of images whose (ground truth | VQ reconstruction | samples) row is logged to tensorboard, wandb
            or trackio at each logging step; 0 disables image logging.
        max_consecutive_bad_steps (`int`, *optional*, defaults to `10`):
            An optimizer step whose gradients are not finite (from a non-finite reward, loss or logit) is skipped: no
            parameter or optimizer-state update, counted as `skipped_steps` in the logs. Training stops with an error
            after this many consecutive skipped steps.

    > [!NOTE]
    > These parameters have defaults different from [`~trl.GRPOConfig`]:
    > - `learning_rate`: no default; set it explicitly (recipes: 1e-6 for LlamaGen, 1e-7 for Janus-Pro).
    > - `gradient_checkpointing`: defaults to `None` (off).
    > - `lr_scheduler_type`: defaults to `"constant"` (the recipes use no schedule and no warmup).
    > - `bf16`: defaults to True only where the accelerator supports bf16 (TRL: whenever fp16 is off).
    > - `logging_steps`: defaults to `1`.
    > - `weight_decay`: defaults to `1e-4` (LlamaGen and Janus-Pro launchers; transformers exempts biases and norm
    >   weights, as the official runs). `adam_beta1`/`adam_beta2` (0.9/0.999) and `max_grad_norm` (1.0) keep TRL's
    >   defaults, which are the launchers' values.
    > - `context_noise_prob` (ξ) defaults to the paper's 0.5, not to the C2I launcher's 0.0 (the launcher omits
    >   `--use-token-noise`): the paper recommends 0.5 and the T2I launcher uses it; `vapi-trl train-c2i` pins 0.0.
    """

    learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate for AdamW. Required: recipes use 1e-6 (LlamaGen) and 1e-7 (Janus-Pro)."},
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Recompute activations in the backward pass to save memory (None: off)."},
    )
    lr_scheduler_type: str = field(
        default="constant",
        metadata={"help": "Learning-rate schedule; the VA-π recipes use none (constant, no warmup)."},
    )
    logging_steps: float = field(
        default=1,
        metadata={"help": "Log every X updates steps. A float in (0, 1) is a ratio of total training steps."},
    )
    weight_decay: float = field(
        default=1e-4,
        metadata={"help": "AdamW weight decay (biases and norm weights exempt); 1e-4 in the official launchers."},
    )

    # Parameters that control the teacher-forcing context
    context_noise_prob: float = field(
        default=0.5,
        metadata={
            "help": "ξ: probability of replacing each context token by a uniformly random code, drawn once per "
            "image. Recipes: 0.0 (LlamaGen C2I), 0.5 (paper, LlamaGen T2I), 1.0 (Janus-Pro)."
        },
    )
    loss_forward_mode: str = field(
        default="train",
        metadata={
            "help": "Policy mode in the loss forward: 'train' (official: the model's dropout and condition dropout "
            "active) or 'eval' (deterministic). Sampling always runs in eval mode.",
            "choices": ["train", "eval"],
        },
    )
    label_dropout: float = field(
        default=0.0,
        metadata={
            "help": "Extra trainer-side condition dropout in the loss forward ('train' loss mode only), for families "
            "without their own (LlamaGen uses config.class_dropout_prob)."
        },
    )
    cfg_scale: float = field(
        default=1.0,
        metadata={"help": "Classifier-free guidance scale of the training forwards; 1.0 disables guidance."},
    )

    # Parameters that control the reward
    pixel_loss: str = field(
        default="mse",
        metadata={"help": "Pixel term of the reward, on the [-1, 1] scale.", "choices": list(PIXEL_LOSSES)},
    )
    pixel_weight: float = field(default=1.0, metadata={"help": "Weight of the pixel term of the reward."})
    lpips_weight: float = field(
        default=1.0, metadata={"help": "Weight of the LPIPS term of the reward; 0 disables LPIPS."}
    )
    lpips_net: str = field(
        default="vgg",
        metadata={"help": "LPIPS backbone (vgg for LlamaGen, alex for Janus-Pro).", "choices": list(LPIPS_NETS)},
    )
    lpips_random_backbone: bool = field(
        default=False,
        metadata={"help": "Build LPIPS with a random backbone (tests and offline smoke runs only)."},
    )
    adv_clip: float | None = field(
        default=5.0,
        metadata={"help": "Clamp advantages to ±adv_clip (binds only for G ≥ 27); None disables it."},
    )
    adv_std_eps: float = field(default=1e-8, metadata={"help": "Added to the group reward standard deviation."})

    # Parameters that control the loss
    ce_coef: float = field(
        default=0.1,
        metadata={"help": "β: weight of the clean-token cross-entropy prior; 0 disables it."},
    )
    kl_coef: float = field(
        default=0.0,
        metadata={"help": "Weight of a k3 KL penalty to a frozen reference policy; a reference is built only if > 0."},
    )

    # Parameters that control compute and logging
    decode_chunk_size: int = field(
        default=16, metadata={"help": "Token sequences decoded and scored by LPIPS at once."}
    )
    decode_dtype: str = field(
        default="float32",
        metadata={
            "help": "Precision of the frozen VQ decode and LPIPS reward (bfloat16: autocast). Measured (demo VQ, "
            "32 px): bf16 moves the reward by 1.3e-4 on average against a within-group std of 1.9e-2; see "
            "docs/benchmarks.md.",
            "choices": ["float32", "bfloat16"],
        },
    )
    num_images_to_log: int = field(
        default=4, metadata={"help": "Images per logging step sent to tensorboard/wandb/trackio; 0 disables."}
    )

    max_consecutive_bad_steps: int = field(
        default=10,
        metadata={"help": "Stop with an error after this many consecutive skipped (non-finite) optimizer steps."},
    )

    def __post_init__(self):
        if self.bf16 is None:
            # TRL turns bf16 on whenever fp16 is off, which fails on machines without bf16 support; VA-π's tiny and CPU
            # runs are common (demo, tests), so bf16 defaults to "on where the accelerator supports it".
            self.bf16 = not self.fp16 and not self.use_cpu and _bf16_supported()
        if self.dataloader_pin_memory and (self.use_cpu or not _accelerator_available()):
            self.dataloader_pin_memory = False  # pinning needs an accelerator; torch only warns that it is ignored
        if self.learning_rate is None:
            raise ValueError(
                "VAPiConfig needs an explicit `learning_rate` (recipes: 1e-6 for LlamaGen, 1e-7 for Janus-Pro)."
            )
        self._check_types()
        if self.learning_rate <= 0:
            raise ValueError(
                f"learning_rate must be > 0, got {self.learning_rate}: with 0 the policy never changes (recipes: 1e-6 "
                "for LlamaGen, 1e-7 for Janus-Pro)."
            )
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"num_generations (G) must be ≥ 2, got {self.num_generations}: the advantages compare at least 2 "
                "generations of each image (recipes: G = 8)."
            )
        self._check_group_geometry()
        super().__post_init__()
        self._check_finite()
        if self.epsilon <= 0 or (self.epsilon_high is not None and self.epsilon_high <= 0):
            raise ValueError(
                f"epsilon (the PPO clip) must be > 0, got epsilon={self.epsilon}, epsilon_high={self.epsilon_high} "
                "(recipe: 0.2)."
            )
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be ≥ 0 (1.0 = no guidance), got {self.cfg_scale}.")
        check_probability(self.context_noise_prob, "context_noise_prob (ξ)")
        check_probability(self.label_dropout, "label_dropout")
        if self.loss_forward_mode not in ("train", "eval"):
            raise ValueError(
                f"loss_forward_mode must be 'train' (official launchers: dropout active in the loss forward) or 'eval' "
                f"(deterministic), got {self.loss_forward_mode!r}."
            )
        check_pixel_loss(self.pixel_loss)
        check_lpips_net(self.lpips_net)
        for name in ("pixel_weight", "lpips_weight", "ce_coef", "kl_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}.")
        if self.pixel_weight == 0 and self.lpips_weight == 0:
            raise ValueError("pixel_weight and lpips_weight are both 0: the pixel reward would be constant.")
        if self.adv_clip is not None and self.adv_clip <= 0:
            raise ValueError(f"adv_clip must be > 0 or None, got {self.adv_clip}.")
        if self.adv_std_eps <= 0:
            raise ValueError(f"adv_std_eps must be > 0, got {self.adv_std_eps}.")
        check_temperature(self.temperature)
        check_sampling_filters(self.top_k, self.top_p)
        if self.decode_chunk_size < 1:
            raise ValueError(f"decode_chunk_size must be ≥ 1, got {self.decode_chunk_size}.")
        if self.decode_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"decode_dtype must be 'float32' or 'bfloat16', got {self.decode_dtype!r}.")
        if self.max_consecutive_bad_steps < 1:
            raise ValueError(f"max_consecutive_bad_steps must be ≥ 1, got {self.max_consecutive_bad_steps}.")
        self._reject_text_generation_options()

    def _check_types(self):
        # From Python a string or None slips past the dataclass annotations and fails later in a comparison.
        for name in (
            "learning_rate", "context_noise_prob", "label_dropout", "cfg_scale", "pixel_weight", "lpips_weight",
            "ce_coef", "kl_coef", "epsilon",
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")

    def _check_finite(self):
        for name in (
            "learning_rate", "context_noise_prob", "label_dropout", "cfg_scale", "pixel_weight", "lpips_weight",
            "adv_std_eps", "ce_coef", "kl_coef", "temperature", "top_p", "epsilon",
        ):  # fmt: skip
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}.")
        if self.adv_clip is not None and not math.isfinite(self.adv_clip):
            raise ValueError(f"adv_clip must be finite or None, got {self.adv_clip}; use None to disable the clamp.")

    def _reject_text_generation_options(self):
        # These GRPO options configure free-running text generation, which VA-π replaces by teacher-forced sampling.
        if self.use_vllm or self.use_transformers_paged or self.use_transformers_continuous_batching:
            raise ValueError(
                "VA-π samples from one teacher-forced pass and never generates free-running rollouts: set "
                "use_vllm=False, use_transformers_paged=False and use_transformers_continuous_batching=False."
            )
        if self.chat_template_kwargs:
            raise ValueError(
                "chat_template_kwargs does not apply to VA-π: prompts are formatted by the policy's processor. "
                "Remove it."
            )
        if self.beta != 0.0:
            raise ValueError(
                f"beta={self.beta}: GRPO's KL `beta` is not used by VA-π. Use `ce_coef` for the cross-entropy prior "
                "and `kl_coef` for a KL penalty to a frozen reference, and keep beta=0."
            )
        if self.min_p is not None or self.repetition_penalty != 1.0 or self.delta is not None:
            raise ValueError(
                "min_p, repetition_penalty and delta are not supported by VA-π's teacher-forced sampling; leave them "
                "unset (temperature, top_k and top_p are supported and applied to old and new log-probs alike)."
            )

    def _check_group_geometry(self):
        # VAPiTrainer returns one row per image (its G samples side by side), so a per-device batch must hold whole
        # groups: a group never spans micro-batches or devices.
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"num_generations ({self.num_generations}) so that no group of G samples is split across micro-batches "
                f"or processes; e.g. set per_device_train_batch_size={self.num_generations} (one image per step)."
            )
        num_generations_eval = self.num_generations_eval or self.num_generations
        evaluates = self.do_eval or getattr(self.eval_strategy, "value", self.eval_strategy) != "no"
        if evaluates and self.per_device_eval_batch_size % num_generations_eval:
            raise ValueError(
                f"per_device_eval_batch_size ({self.per_device_eval_batch_size}) must be a multiple of "
                f"num_generations_eval ({num_generations_eval}); set it to {num_generations_eval} or a multiple."
            )


def _accelerator_available() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


__all__ = ["VAPiConfig"]
