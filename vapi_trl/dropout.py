"""Module-mode switches of the VA-π step: sampling always in eval mode; the loss forward in train or eval mode."""

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.dropout import _DropoutNd


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model.eval()` for the block, then each submodule's own previous mode back.

    The sampling forward runs here: no dropout, no condition dropout, no LoRA dropout (issue 12), as the official
    launchers' `--sample-model-mode eval`.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def dropout_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Every dropout layer of `model` (any `nn.Dropout*`, so condition and LoRA dropout too) in eval mode for the
    block; everything else keeps its mode.

    Not `model.eval()`: transformers runs gradient checkpointing only in train mode, and the loss forward of
    `loss_forward_mode="eval"` must keep it.
    """
    switched = [module for module in model.modules() if isinstance(module, _DropoutNd) and module.training]
    for module in switched:
        module.training = False
    try:
        yield model
    finally:
        for module in switched:
            module.training = True


__all__ = ["dropout_disabled", "eval_mode"]
