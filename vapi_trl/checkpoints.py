"""Finding the checkpoint to resume from when a save may have been interrupted."""

import json
import os
import re

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# `Trainer._save_checkpoint` writes the model, optimizer, scheduler and RNG states first and `trainer_state.json` last,
# so a folder holding a readable `trainer_state.json` was saved completely.
_STATE_FILE = "trainer_state.json"


def is_complete_checkpoint(path: str) -> bool:
    """Whether `path` is a checkpoint folder whose save finished (its trainer state is present and readable)."""
    state = os.path.join(path, _STATE_FILE)
    if not os.path.isfile(state):
        return False
    try:
        with open(state, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The highest-step `checkpoint-N` folder in `output_dir` whose save completed, or None.

    Unlike `transformers.trainer_utils.get_last_checkpoint`, a folder left half-written by a process killed during a
    save is skipped, so resuming picks the previous, complete checkpoint.
    """
    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isdir(path) and is_complete_checkpoint(path):
            steps.append((int(match.group(1)), path))
    return max(steps)[1] if steps else None


__all__ = ["is_complete_checkpoint", "last_complete_checkpoint"]
