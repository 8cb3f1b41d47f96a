"""The Python code shown in the README and the quickstart runs, on tiny local stand-ins for the real checkpoints."""

import os
import re

import pytest
import torch

from vapi_trl.rewards import build_lpips

from .conftest import make_image_dataset


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks(path: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", open(os.path.join(ROOT, path), encoding="utf-8").read(), re.S)


@pytest.mark.slow
@pytest.mark.parametrize(("page", "policy_path", "tokenizer_path"), [
    ("README.md", "path/to/llamagen-c2i", "path/to/vq-tokenizer"),
    ("docs/quickstart.md", "llamagen-xxl/policy", "llamagen-xxl/image_tokenizer"),
])  # fmt: skip
def test_documented_training_snippet_runs(page, policy_path, tokenizer_path, tmp_path, monkeypatch, tiny_policy,
                                          tiny_image_tokenizer):  # fmt: skip
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoUrl

    (code,) = python_blocks(page)
    tiny_policy.save_pretrained(tmp_path / "policy")
    tiny_image_tokenizer.save_pretrained(tmp_path / "image_tokenizer")
    # Same code, tiny sizes: local folders for the paths, one short step, outputs in tmp.
    code = code.replace(f'"{policy_path}"', repr(str(tmp_path / "policy")))
    code = code.replace(f'"{tokenizer_path}"', repr(str(tmp_path / "image_tokenizer")))
    code = re.sub(r'output_dir="([^"]+)"', lambda m: f"output_dir={str(tmp_path / m.group(1))!r}", code)
    code = re.sub(r"max_steps=\d+", "max_steps=1", code)
    code = re.sub(r"gradient_accumulation_steps=\d+", "gradient_accumulation_steps=1", code)
    assert "max_steps=1" in code and str(tmp_path / "policy") in code

    # Offline there are no ImageNet LPIPS weights; the snippet's default LPIPS-VGG gets a fixed random backbone.
    monkeypatch.setattr("vapi_trl.trainer.build_lpips", lambda net, random_backbone=False: build_lpips(net, True))
    uploads = []
    # The Hub puts a bare repo name under the user's namespace.
    repo_url = lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/someone/{repo_id.split('/')[-1]}")  # noqa: E731
    monkeypatch.setattr(HfApi, "create_repo", repo_url)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, repo_id, folder_path, **kw: uploads.append(folder_path))

    before = {name: p.detach().clone() for name, p in tiny_policy.named_parameters()}
    namespace = {"dataset": make_image_dataset(num_images=16)}
    torch.manual_seed(0)
    exec(compile(code, page, "exec"), namespace)

    trainer = namespace["trainer"]
    assert trainer.state.global_step == 1
    assert any(not torch.equal(p, before[n]) for n, p in trainer.policy.named_parameters())
    if "push_to_hub" in code:
        assert len(uploads) == 1 and os.path.isfile(os.path.join(uploads[0], "model.safetensors"))
