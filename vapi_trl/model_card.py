"""The `README.md` model card `VAPiTrainer` writes for an aligned policy: metadata, training recipe, final metrics."""

import os
from typing import Any

from trl.trainer.utils import get_config_model_id


# Training metrics reported in the card, in this order (the last logged value of each).
_CARD_METRICS = ("reward", "mse", "l1", "lpips", "ce", "policy_loss", "token_accuracy", "train_loss")


def final_metrics_lines(log_history: list[dict[str, float]]) -> list[str]:
    """Model-card table of the last logged value of the main training metrics (empty before any logging)."""
    last = {key: entry[key] for entry in log_history for key in _CARD_METRICS if key in entry}
    if not last:
        return []
    return [
        "## Final training metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {key} | {last[key]:.4g} |" for key in _CARD_METRICS if key in last],
        "",
    ]


def _recipe_lines(args: Any, global_step: int, dataset_name: str | None) -> list[str]:
    reward = f"−({args.pixel_weight}·{args.pixel_loss.upper()} + {args.lpips_weight}·LPIPS-{args.lpips_net})"
    return [
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
        f"| optimizer steps | {global_step} |",
        *([f"| dataset | {dataset_name} |"] if dataset_name else []),
        "",
    ]


def model_card_text(
    policy: Any,
    args: Any,
    state: Any,
    paper: dict[str, str],
    tags: list[str],
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> str:
    """
    The model card of a policy post-trained with VA-π.

    Args:
        policy ([`~transformers.PreTrainedModel`]): the unwrapped policy (its config names the base model).
        args ([`VAPiConfig`]): the training configuration (recipe table; `output_dir` names the model by default).
        state ([`~transformers.TrainerState`]): `global_step` and `log_history` (final-metrics table).
        paper (`dict`): `title`, `id` (arXiv id) and `citation` (BibTeX) of the method.
        tags (`list[str]`): model tags.
        model_name (`str`, *optional*): the card's title; defaults to the name of `args.output_dir`.
        dataset_name (`str`, *optional*): the training dataset, for metadata and recipe.
    """
    from huggingface_hub import ModelCardData

    base_model = get_config_model_id(policy.config)
    base_model = base_model if base_model and not os.path.isdir(base_model) else None
    # Prompt-conditioned policies (condition column `prompt`) are text-to-image; class-conditional ones are not.
    text_to_image = "prompt" in tuple(getattr(policy, "condition_columns", ()))
    card_data = ModelCardData(
        base_model=base_model,
        tags=sorted(set(tags)),
        pipeline_tag="text-to-image" if text_to_image else "unconditional-image-generation",
        library_name="transformers",
        datasets=[dataset_name] if dataset_name else None,
    )
    title = model_name or os.path.basename(os.path.normpath(args.output_dir))
    origin = f", starting from `{base_model}`" if base_model else ""
    link = f"[{paper['title']}](https://huggingface.co/papers/{paper['id']})"
    has_vq = hasattr(getattr(policy, "model", None), "vqmodel")
    lines = [
        "---",
        card_data.to_yaml(),
        "---",
        "",
        f"# {title}",
        "",
        f"This autoregressive image generator was post-trained with **VA-π** ({link}) using vapi-trl{origin}.",
        "It generates image tokens: decode them with the same frozen VQ image tokenizer as the base model"
        + (" (the `vqmodel` inside this checkpoint)." if has_vq else ", which this checkpoint does not contain."),
        "",
        *_recipe_lines(args, state.global_step, dataset_name),
        *final_metrics_lines(state.log_history),
        "## Citation",
        "",
        "```bibtex",
        paper["citation"],
        "```",
        "",
    ]
    return "\n".join(lines)


__all__ = ["final_metrics_lines", "model_card_text"]
