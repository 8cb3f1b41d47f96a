"""Checks shared by the policy configs (`validate_architecture`)."""

from typing import Any


def check_transformer_sizes(config: Any, positive: tuple[str, ...]) -> None:
    """
    Raise a `ValueError` naming the field unless every field of `config` named in `positive` is a positive integer
    and `hidden_size` splits into `num_attention_heads` equal heads.
    """
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {getattr(config, name)}.")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"`hidden_size` ({config.hidden_size}) must be divisible by `num_attention_heads` "
            f"({config.num_attention_heads}); pick a head count that divides the width."
        )


__all__ = ["check_transformer_sizes"]
