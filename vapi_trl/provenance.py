"""
What made a folder of results: content fingerprints of models and tokenizers, and the rule for writing into a folder
that already holds files.

A resumable writer (`vapi-trl sample`, `sample-geneval`) records in its `run.json` the fingerprint of every model that
changes the pixels (policy, image tokenizer, text encoder) next to the settings, and resumes only when all of them
match. A folder that holds files but no record of ours, or a record of another model or settings, is refused with a
message that names the difference and the two ways out (another folder, or `--overwrite`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any


# Config entries that say where or with which library version a model was loaded, not what it computes.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash", "processor_class")


def _stable_config(config: Any) -> dict[str, Any]:
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {key: value for key, value in data.items() if key not in _VOLATILE_CONFIG_KEYS}


def _update_with_state_dict(digest: Any, state_dict: Mapping[str, Any], progress: bool = False) -> None:
    import torch
    from tqdm.auto import tqdm

    total = sum(t.numel() * t.element_size() for t in state_dict.values() if isinstance(t, torch.Tensor))
    # Hashing runs at about 1 GB/s: a bar only for models large enough to take seconds.
    bar = tqdm(total=total, desc="fingerprint", unit="B", unit_scale=True, disable=not progress or total < 2**30)
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the buffer, without a copy
        bar.update(tensor.numel() * tensor.element_size())
    bar.close()


def fingerprint(obj: Any, progress: bool = False) -> str | None:
    """
    Content fingerprint (sha256 hex) of a model, processor or tokenizer: its class, its configuration (without paths
    and library versions) and the bytes of every tensor of its `torch.nn.Module`s, in name order.

    Two objects with the same fingerprint compute the same function whatever folder they were loaded from; a single
    changed weight changes it. Text tokenizers are identified by their vocabulary. Returns `None` for `None`.
    `progress` shows a bar for models over 1 GiB.
    """
    if obj is None:
        return None
    import torch

    digest = hashlib.sha256(f"{type(obj).__module__}.{type(obj).__qualname__}\n".encode())
    if isinstance(obj, torch.nn.Module):
        config = getattr(obj, "config", None)
        if config is not None:
            digest.update(json.dumps(_stable_config(config), sort_keys=True, default=str).encode())
        _update_with_state_dict(digest, obj.state_dict(), progress)
        return digest.hexdigest()
    # Processors and encoders hold their modules as attributes (`vq_model`, `text_encoder`, ...).
    for name, value in sorted(vars(obj).items()):
        if isinstance(value, torch.nn.Module):
            digest.update(f"module {name}={fingerprint(value, progress)}\n".encode())
    if hasattr(obj, "get_vocab"):
        digest.update(json.dumps(sorted(obj.get_vocab().items())).encode())
    if hasattr(obj, "to_dict"):
        try:
            settings = _stable_config(obj)
        except (TypeError, ValueError):
            settings = {}
        settings = {key: value for key, value in settings.items() if not isinstance(value, torch.nn.Module)}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class OutputFolderError(ValueError):
    """A writer refused an output folder that holds files it cannot prove are its own, or another run's."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def prepare_output_folder(
    output_dir: str,
    record: dict[str, Any],
    keys: Sequence[str],
    owned: Callable[[str], bool],
    overwrite: bool = False,
    what: str = "samples",
    run_file: str = "run.json",
) -> bool:
    """
    Make `output_dir` ready for a (possibly resumed) run described by `record`, then write `record` to `run_file`.

    - empty or missing folder: created;
    - a `run_file` whose `keys` (settings and model fingerprints) all equal `record`'s: resumed (returns `True`);
    - any other content (files without a `run_file`, a record of other settings or another model): refused with an
      `OutputFolderError` that names the differences, unless `overwrite`, which deletes the folder entries for which
      `owned(name)` is true (the writer's own layout) and `run_file`, and keeps everything else.

    Returns:
        Whether earlier results are resumed.
    """
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, run_file)
    entries = [name for name in os.listdir(output_dir) if name != run_file]
    previous = None
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as file:
                previous = json.load(file)
        except (OSError, ValueError):
            previous = {}
    if overwrite:
        for name in entries:
            if owned(name):
                target = os.path.join(output_dir, name)
                shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
        if previous is not None:
            os.remove(path)
        previous, entries = None, []
    resumed = False
    if previous is not None:
        changed = [key for key in keys if previous.get(key) != record.get(key)]
        if changed:
            details = ", ".join(
                f"{key}: {_describe(previous.get(key))} -> {_describe(record.get(key))}" for key in changed
            )
            raise OutputFolderError(
                f"{output_dir!r} holds {what} of another model or other settings ({details}); resuming would mix "
                "them. Pick another output folder, or pass --overwrite to replace them."
            )
        resumed = True
    elif entries:
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputFolderError(
            f"{output_dir!r} is not empty ({len(entries)} entries: {shown}) and has no {run_file} of ours, so its "
            f"files cannot be proven to be {what} of this model and these settings. Pick another output folder, or "
            "pass --overwrite to replace them."
        )
    write_json_atomic(path, record)
    return resumed


def write_json_atomic(path: str, data: Any) -> None:
    """Write `data` as JSON to `path` through a temporary file, so an interrupted write never leaves half a file."""
    with open(path + ".tmp", "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
    os.replace(path + ".tmp", path)


__all__ = ["OutputFolderError", "fingerprint", "prepare_output_folder", "write_json_atomic"]
