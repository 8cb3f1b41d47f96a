import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from vapi_trl.models import LlamaGenForClassToImage


SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "ddp_train.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_stay_identical_and_keep_groups_whole(tmp_path):
    accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    # On a machine without GPUs, `--multi_gpu` starts 2 torchrun processes that fall back to CPU + gloo, while
    # `--cpu` with 2 processes goes through accelerate's simple launcher, which starts ONE process unless MPI is set up.
    command = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(free_port()), SCRIPT, str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert all(record["world_size"] == 2 for record in ranks)
    # DDP keeps the replicas identical: every parameter agrees across ranks.
    for name, value in ranks[0]["param_sums"].items():
        assert ranks[1]["param_sums"][name] == pytest.approx(value, abs=1e-9), name
        assert ranks[1]["param_abs_sums"][name] == pytest.approx(ranks[0]["param_abs_sums"][name], abs=1e-9), name
    # Each generation on each rank holds whole groups: G identical rows per image, and no image on both ranks.
    for step, (groups0, groups1) in enumerate(zip(ranks[0]["groups"], ranks[1]["groups"])):
        for group in groups0 + groups1:
            assert len(group) == 2 and len(set(group)) == 1, f"a group was split at generation {step}: {group}"
        images0, images1 = {g[0] for g in groups0}, {g[0] for g in groups1}
        assert not images0 & images1, f"an image's group spans both ranks at generation {step}"
    # The saved folder loads back.
    model = LlamaGenForClassToImage.from_pretrained(str(tmp_path / "final"))
    sums = {name: param.double().sum().item() for name, param in model.named_parameters()}
    for name, value in sums.items():
        assert value == pytest.approx(ranks[0]["param_sums"][name], abs=1e-6), name
    assert torch.isfinite(torch.tensor(ranks[0]["loss"])).all()
