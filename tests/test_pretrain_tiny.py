"""`scripts/pretrain_tiny.py` end to end on a synthetic Fashion-MNIST-shaped raw folder (the real one is a Debian
package CI does not have): the full build, then `--policy-only`, which must keep the data, VQ and classifiers, and
`--decoder-only`, which must keep every code id, the policy and the classifiers."""

import gzip
import hashlib
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def synthetic_raw(folder, per_class_train: int = 40, per_class_test: int = 20):
    """Class-dependent blobs (so the classifiers have something to learn), IDX-gzipped as the Debian package."""
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = np.repeat(np.arange(10), per_class)
        images = rng.integers(0, 40, (len(labels), 28, 28))
        for index, label in enumerate(labels):
            images[index, 2 * label : 2 * label + 8, 4:24] += 200
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """`pretrain_tiny.main` sets torch's thread count for the whole process; later tests must not inherit it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_full_build_then_policy_only_keeps_data_vq_and_classifiers(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "scripts"))
    sys.modules.pop("pretrain_tiny", None)
    import pretrain_tiny

    from vapi_trl.demo import embedded
    from vapi_trl.models import LlamaGenForClassToImage

    monkeypatch.setattr(embedded, "DATA_FILE", embedded.DATA_FILE)  # the script re-points it; restore afterwards
    raw, out = tmp_path / "raw", tmp_path / "demo"
    raw.mkdir()
    synthetic_raw(raw)
    common = ["--raw-dir", str(raw), "--out", str(out), "--train", "100", "--val", "50", "--holdout", "50",
              "--test", "100", "--grid", "8", "--codebook-size", "32", "--policy-batch", "16",
              "--eval-every", "2", "--classifier-epochs", "1"]  # fmt: skip
    try:
        recipe = pretrain_tiny.main(common + ["--vq-steps", "3", "--decoder-steps", "2", "--policy-steps", "4"])
        weights = out / "weights"
        assert recipe["policy"]["steps"] == 4 and len(recipe["policy"]["val_ce_curve"]) == 2
        assert recipe["policy"]["best_val_ce"] == min(p["val_ce"] for p in recipe["policy"]["val_ce_curve"])
        assert recipe["data"]["pretraining_pool"] == 400 - 100  # 40 per class, less val and holdout
        assert recipe["image_tokenizer"]["decoder_steps"] == 2
        assert "hidden 64, 2 layers" in recipe["policy"]["config"]
        kept = {
            name: digest(weights / name)
            for name in ("image_tokenizer/vq_model/model.safetensors", "classifiers/feature/model.safetensors")
        }
        kept["data"] = digest(out / "data" / "fashion_mnist_subset.npz")

        with pytest.raises(ValueError, match="codebook_size=32"):
            pretrain_tiny.main(common + ["--codebook-size", "64", "--policy-only"])

        retrained = pretrain_tiny.main(
            common
            + [
                "--policy-only",
                "--policy-hidden",
                "32",
                "--policy-layers",
                "1",
                "--policy-ffn",
                "64",
                "--policy-steps",
                "2",
            ]  # fmt: skip
        )
    finally:
        embedded._load_npz.cache_clear()
    assert retrained["policy"]["steps"] == 2 and "hidden 32, 1 layers" in retrained["policy"]["config"]
    assert retrained["args"]["policy_hidden"] == 32 and "--policy-only" in retrained["policy_command"]
    assert json.loads((weights / "recipe.json").read_text()) == retrained
    policy = LlamaGenForClassToImage.from_pretrained(str(weights / "policy"))
    assert policy.config.hidden_size == 32 and policy.config.vocab_size == 32
    assert retrained["policy"]["parameters"] == sum(p.numel() for p in policy.parameters())
    assert (
        retrained["image_tokenizer"] == recipe["image_tokenizer"] and retrained["classifiers"] == recipe["classifiers"]
    )
    assert {name: digest(weights / name) for name in kept if name != "data"} == {
        k: v for k, v in kept.items() if k != "data"
    }
    assert digest(out / "data" / "fashion_mnist_subset.npz") == kept["data"]


@pytest.mark.slow
def test_decoder_only_keeps_codes_policy_and_classifiers(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "scripts"))
    sys.modules.pop("pretrain_tiny", None)
    import pretrain_tiny
    import torch

    from vapi_trl.demo import embedded
    from vapi_trl.models import ImageTokenizerProcessor

    monkeypatch.setattr(embedded, "DATA_FILE", embedded.DATA_FILE)
    raw, out = tmp_path / "raw", tmp_path / "demo"
    raw.mkdir()
    synthetic_raw(raw)
    common = ["--raw-dir", str(raw), "--out", str(out), "--train", "100", "--val", "50", "--holdout", "50",
              "--test", "100", "--grid", "8", "--codebook-size", "32", "--policy-batch", "16",
              "--eval-every", "2", "--classifier-epochs", "1", "--policy-hidden", "32", "--policy-layers", "1",
              "--policy-ffn", "64"]  # fmt: skip
    weights = out / "weights"
    try:
        recipe = pretrain_tiny.main(common + ["--vq-steps", "3", "--decoder-steps", "0", "--policy-steps", "2"])
        test_pixels = embedded.to_pixels(embedded.load_arrays("test")[0])
        before = ImageTokenizerProcessor.from_pretrained(str(weights / "image_tokenizer"))
        kept = {name: digest(weights / name) for name in
                ("policy/model.safetensors", "classifiers/feature/model.safetensors",
                 "classifiers/heldout/model.safetensors")}  # fmt: skip

        with pytest.raises(ValueError, match="grid=8"):
            pretrain_tiny.main(common + ["--grid", "4", "--decoder-only"])
        with pytest.raises(ValueError, match="one after the other"):
            pretrain_tiny.main(common + ["--decoder-only", "--policy-only"])

        refined = pretrain_tiny.main(common + ["--decoder-only", "--decoder-steps", "3", "--decoder-lr", "1e-2"])
        after = ImageTokenizerProcessor.from_pretrained(str(weights / "image_tokenizer"))
        ids_before, ids_after = before.encode(test_pixels), after.encode(test_pixels)
        # a second round is appended to the history, not merged into the first
        twice = pretrain_tiny.main(common + ["--decoder-only", "--decoder-steps", "1", "--decoder-lr", "1e-3"])
    finally:
        embedded._load_npz.cache_clear()
    assert torch.equal(ids_before, ids_after)  # integer code ids: the encoder and codebook were frozen
    assert not torch.allclose(before.decode(ids_before), after.decode(ids_after))  # the decoder did train
    assert {name: digest(weights / name) for name in kept} == kept
    assert refined["image_tokenizer"]["decoder_steps"] == 3 and refined["args"]["decoder_lr"] == 1e-2
    assert "--decoder-only" in refined["decoder_command"]
    assert refined["policy"] == recipe["policy"] and refined["reference_batch"] == recipe["reference_batch"]
    mse = (after.decode(ids_after) - test_pixels).pow(2).mean().item()
    torch.testing.assert_close(refined["image_tokenizer"]["test_reconstruction_mse_pm1"], mse, rtol=1e-4, atol=1e-7)
    rounds = refined["image_tokenizer"]["decoder_rounds"]
    assert [(r["decoder_steps"], r["decoder_lr"]) for r in rounds] == [(0, recipe["args"]["decoder_lr"]), (3, 1e-2)]
    assert rounds[0]["test_reconstruction_mse_pm1"] == recipe["image_tokenizer"]["test_reconstruction_mse_pm1"]
    assert rounds[1]["test_reconstruction_mse_pm1"] == refined["image_tokenizer"]["test_reconstruction_mse_pm1"]
    assert twice["image_tokenizer"]["decoder_rounds"][:2] == rounds
    assert [r["decoder_steps"] for r in twice["image_tokenizer"]["decoder_rounds"]] == [0, 3, 1]
    assert twice["args"]["decoder_steps"] == 1 and "--decoder-steps 1" in twice["decoder_command"]
    assert json.loads((weights / "recipe.json").read_text()) == twice
