"""Build the embedded default of `vapi-trl demo`: the Fashion-MNIST subset, a tiny VQ, a tiny LlamaGen policy and the
two small-benchmark classifiers, all reproducible from `--seed` in minutes on CPU.

Source data: Debian's `dataset-fashion-mnist` package (MIT licence, Zalando Research):

    apt-get update && apt-get download dataset-fashion-mnist
    dpkg-deb -x dataset-fashion-mnist_*.deb /tmp/fm
    python scripts/pretrain_tiny.py --raw-dir /tmp/fm/usr/share/datasets/fashion-mnist

Steps (everything written under `vapi_trl/demo/`):

1. Splits: from the 60 000 training images hold out `--val` (early stopping, sampling-temperature and setting choice)
   and a disjoint `--holdout` (held-out classifier only); the rest (56 000 by default) is the pretraining pool, and
   `--train` of it are shipped as the VA-π tuning split (the paper also tunes on images its base was trained on).
   From the 10 000 test images draw `--test` (evaluation only). Class-balanced, shuffled; the shipped splits are
   stored uint8 28×28 in `data/fashion_mnist_subset.npz` and padded to 32×32 at load time. The pool itself is not
   shipped (it is only needed here).
2. VQ (JanusVQVAE, 32 px → `--grid`×`--grid` ids, `--codebook-size` codes; 8×8 and 512 by default): L1 + MSE
   reconstruction, codebook loss + 0.25 × commitment, on the l2-normalised latent and codebook (cosine nearest code,
   as LlamaGen and `ImageTokenizerProcessor.encode`), straight-through gradients, dead codes restarted from encoder
   outputs. Trained on the pool. Then `--decoder-steps` of decoder-only fine-tuning with the encoder and codebook
   frozen (every code id unchanged; the decoder is what the short joint training leaves least converged). Saved with
   `ImageTokenizerProcessor.save_pretrained`.
3. Policy (LlamaGen C2I, 0.16M parameters by default: hidden 64, 2 layers, FFN 160; 64 tokens): next-token
   cross-entropy on the VQ codes of the pool with the official label dropout (0.1, so the model is also
   unconditional, as LlamaGen's bases) and no other dropout, AdamW, warm-up + cosine schedule over `--policy-steps`;
   the validation CE is measured every `--eval-every` steps and the best state is kept (early stopping: the shipped
   base is the one with the lowest held-out CE, not an overfit one). The default budget (600 steps × 128 images) ends
   while the validation CE still falls: a base with a measurable free-running vs teacher-forced gap (exposure bias),
   which a fully trained policy of this size does not have (see `docs/small_benchmark.md`). Saved with
   `save_pretrained` (safetensors).
4. Classifiers: `SmallClassifier` trained on `train` (feature extractor for FID/KID/P-R) and on `holdout` (conditional
   accuracy).
5. `weights/recipe.json`: settings, final losses, the validation-CE curve, and the teacher-forced CE of the shipped
   policy on the first 64 test images (a regression check for the shipped weights).

Partial rebuilds keep the rest as shipped (the split and VQ settings must match the recipe): `--classifiers-only`,
`--policy-only` (a new policy on the shipped VQ's codes) and `--decoder-only` (a fine-tuned decoder; codes, policy and
classifiers kept).
"""

import argparse
import gzip
import json
import math
import os
import platform
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "vapi_trl", "demo")

LICENSE_TEXT = """\
Fashion-MNIST subset bundled with vapi-trl (fashion_mnist_subset.npz)

Source: Fashion-MNIST, Zalando Research, https://github.com/zalandoresearch/fashion-mnist
Obtained from the Debian package `dataset-fashion-mnist` (0.0~git20200523.55506a9-1).
Paper: Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
Learning Algorithms. arXiv:1708.07747, 2017.

Contents: {counts}. Drawn class-balanced with seed {seed} by scripts/pretrain_tiny.py; uint8 28x28 grayscale.
Classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation the
rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit
persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of the
Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE
WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def read_idx(path: str) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array (uint8 images [N, 28, 28] or labels [N])."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator, exclude=None) -> np.ndarray:
    chosen = []
    for label in range(10):
        pool = np.flatnonzero(labels == label)
        if exclude is not None:
            pool = np.setdiff1d(pool, exclude)
        chosen.append(rng.choice(pool, per_class, replace=False))
    return rng.permutation(np.concatenate(chosen))


def build_splits(raw_dir: str, args) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`(shipped, pool)`: the shipped splits (train ⊂ pool, val, holdout, test) and the pretraining pool."""
    rng = np.random.default_rng(args.seed)
    train_images = read_idx(os.path.join(raw_dir, "train-images-idx3-ubyte.gz"))
    train_labels = read_idx(os.path.join(raw_dir, "train-labels-idx1-ubyte.gz"))
    test_images = read_idx(os.path.join(raw_dir, "t10k-images-idx3-ubyte.gz"))
    test_labels = read_idx(os.path.join(raw_dir, "t10k-labels-idx1-ubyte.gz"))
    val = balanced_indices(train_labels, args.val // 10, rng)
    holdout = balanced_indices(train_labels, args.holdout // 10, rng, exclude=val)
    pool = rng.permutation(np.setdiff1d(np.arange(len(train_labels)), np.concatenate([val, holdout])))
    train = pool[balanced_indices(train_labels[pool], args.train // 10, rng)]
    test = balanced_indices(test_labels, args.test // 10, rng)
    assert not set(pool) & set(val) and not set(pool) & set(holdout) and not set(val) & set(holdout)

    def split(images, labels, index):
        return images[index], labels[index].astype(np.int64)

    shipped = {}
    for name, images, labels, index in (
        ("train", train_images, train_labels, train), ("val", train_images, train_labels, val),
        ("holdout", train_images, train_labels, holdout), ("test", test_images, test_labels, test),
    ):  # fmt: skip
        shipped[f"{name}_images"], shipped[f"{name}_labels"] = split(images, labels, index)
    pool_images, pool_labels = split(train_images, train_labels, pool)
    return shipped, {"images": pool_images, "labels": pool_labels}


def vq_config(codebook_size: int, grid: int):
    from transformers import JanusVQVAEConfig

    # 32 px; each entry of channel_multiplier after the first halves the resolution: [1, 2, 2] → 8×8, [1, 1, 2, 2] →
    # 4×4. GroupNorm(32) needs ≥ 32 channels.
    multipliers = {8: [1, 2, 2], 4: [1, 1, 2, 2], 16: [1, 2]}
    if grid not in multipliers:
        raise ValueError(f"--grid must be one of {sorted(multipliers)} (32 px images), got {grid}.")
    return JanusVQVAEConfig(
        embed_dim=16, num_embeddings=codebook_size, latent_channels=32, base_channels=32,
        channel_multiplier=multipliers[grid], num_res_blocks=1, num_patches=grid, projection_dim=32,
        image_token_embed_dim=32, num_hidden_layers=1,
    )  # fmt: skip


def nearest_codes(vq, pixels: torch.Tensor):
    """l2-normalised encoder latents `[B·h·w, D]`, their cosine-nearest code ids `[B·h·w]`, the l2-normalised
    codebook `[K, D]` and the latent grid shape `(B, D, h, w)`."""
    latent = F.normalize(vq.quant_conv(vq.encoder(pixels)), dim=1)  # [B, D, h, w]
    batch, dim, height, width = latent.shape
    flat = latent.permute(0, 2, 3, 1).reshape(-1, dim)
    codebook = F.normalize(vq.quantize.embedding.weight, dim=-1)
    return flat, (flat @ codebook.T).argmax(dim=1), codebook, latent.shape


def decode_latents(vq, flat: torch.Tensor, shape) -> torch.Tensor:
    """Decode code vectors `[B·h·w, D]` laid out on the grid `shape` `(B, D, h, w)` to pixels `[B, 3, H, W]`."""
    batch, dim, height, width = shape
    return vq.decoder(vq.post_quant_conv(flat.view(batch, height, width, dim).permute(0, 3, 1, 2)))


def quantize(vq, pixels: torch.Tensor):
    """Encoder → l2-normalised latent → cosine-nearest l2-normalised code; straight-through. Returns decode, losses."""
    flat, ids, codebook, shape = nearest_codes(vq, pixels)
    quantized = codebook[ids]
    codebook_loss = F.mse_loss(quantized, flat.detach())
    commitment = F.mse_loss(flat, quantized.detach())
    straight_through = flat + (quantized - flat).detach()
    return decode_latents(vq, straight_through, shape), codebook_loss, commitment, ids, flat.detach()


def train_vq(pixels: torch.Tensor, args, log) -> tuple[object, dict]:
    from transformers import JanusVQVAE

    torch.manual_seed(args.seed)
    vq = JanusVQVAE(vq_config(args.codebook_size, args.grid))
    vq.train()
    optimizer = torch.optim.Adam(vq.parameters(), lr=args.vq_lr)
    generator = torch.Generator().manual_seed(args.seed)
    usage = torch.zeros(args.codebook_size)
    history, restarts = [], 0
    for step in range(args.vq_steps):
        index = torch.randint(len(pixels), (args.vq_batch,), generator=generator)
        x = pixels[index]
        decoded, codebook_loss, commitment, ids, flat = quantize(vq, x)
        reconstruction = F.l1_loss(decoded, x) + F.mse_loss(decoded, x)
        loss = reconstruction + codebook_loss + 0.25 * commitment
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:  # cosine decay to 10%
            group["lr"] = args.vq_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step + 1) / args.vq_steps)))
        usage += torch.bincount(ids, minlength=args.codebook_size).float()
        if (step + 1) % 50 == 0 and step + 1 < 0.8 * args.vq_steps:
            dead = torch.nonzero(usage == 0).flatten()
            if len(dead):  # restart unused codes on random encoder outputs of this batch
                with torch.no_grad():
                    pick = torch.randint(len(flat), (len(dead),), generator=generator)
                    vq.quantize.embedding.weight[dead] = flat[pick]
                restarts += len(dead)
            usage.zero_()
        history.append((reconstruction.item(), F.mse_loss(decoded, x).item()))
        if (step + 1) % 100 == 0:
            recent = np.mean(history[-100:], axis=0)
            log(f"vq step {step + 1}/{args.vq_steps}: l1+mse {recent[0]:.4f}, mse {recent[1]:.4f}")
    vq.eval()
    tail = np.mean(history[-100:], axis=0)
    return vq, {"final_l1_plus_mse": float(tail[0]), "final_mse": float(tail[1]), "code_restarts": restarts}


def finetune_decoder(vq, pixels: torch.Tensor, args, log) -> dict:
    """
    Train the VQ's decoder (and post-quant conv) alone on the reconstruction loss, with the encoder and codebook
    frozen, so every image keeps its code ids: a policy trained on those ids stays valid. The joint VQ training sees
    only `--vq-steps × --vq-batch` images on CPU, and its decoder is the part left furthest from converged (its blur
    caps the recall any generator over this VQ can reach). Returns the decoder's stats.
    """
    started = time.time()
    trainable = [*vq.decoder.parameters(), *vq.post_quant_conv.parameters()]
    vq.requires_grad_(False)
    for parameter in trainable:
        parameter.requires_grad_(True)
    vq.train()
    optimizer = torch.optim.Adam(trainable, lr=args.decoder_lr)
    generator = torch.Generator().manual_seed(args.seed + 2)
    history = []
    for step in range(args.decoder_steps):
        x = pixels[torch.randint(len(pixels), (args.decoder_batch,), generator=generator)]
        with torch.no_grad():
            _, ids, codebook, shape = nearest_codes(vq, x)
        decoded = decode_latents(vq, codebook[ids], shape)
        reconstruction = F.l1_loss(decoded, x) + F.mse_loss(decoded, x)
        optimizer.zero_grad()
        reconstruction.backward()
        optimizer.step()
        for group in optimizer.param_groups:  # cosine decay to 10%
            progress = (step + 1) / args.decoder_steps
            group["lr"] = args.decoder_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        history.append((reconstruction.item(), F.mse_loss(decoded.detach(), x).item()))
        if (step + 1) % 100 == 0:
            recent = np.mean(history[-100:], axis=0)
            log(f"decoder step {step + 1}/{args.decoder_steps}: l1+mse {recent[0]:.4f}, mse {recent[1]:.4f}")
    vq.eval()
    vq.requires_grad_(False)
    tail = [float(value) for value in np.mean(history[-100:], axis=0)] if history else [None, None]
    return {
        "decoder_steps": args.decoder_steps,
        "decoder_final_l1_plus_mse": tail[0],
        "decoder_final_mse": tail[1],
        "decoder_seconds": round(time.time() - started, 1),
    }


def encode_all(image_tokenizer, pixels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([image_tokenizer.encode(chunk) for chunk in pixels.split(batch_size)])


def policy_config(codebook_size: int, num_tokens: int, hidden_size: int, num_layers: int, intermediate_size: int):
    from vapi_trl.models import LlamaGenConfig

    # Label dropout as the official launchers (the base is also an unconditional model, sampled here without CFG,
    # like the paper's bases); no other dropout: this base is far from overfitting its 56 000 images.
    return LlamaGenConfig(
        vocab_size=codebook_size, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=4,
        intermediate_size=intermediate_size, block_size=num_tokens, num_classes=10, token_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0,
        ffn_dropout_p=0.0, class_dropout_prob=0.1,
    )  # fmt: skip


def teacher_forced_ce(policy, labels: torch.Tensor, ids: torch.Tensor, batch_size: int = 500) -> float:
    """Mean next-token CE (nats/token) of `ids` `[N, T]` given clean contexts, eval mode."""
    was_training = policy.training
    policy.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            logits = policy(class_labels=labels[start : start + batch_size], context_ids=chunk[:, :-1]).logits
            total += F.cross_entropy(logits.flatten(0, 1), chunk.flatten(), reduction="sum").item()
    policy.train(was_training)
    return total / ids.numel()


def train_policy(labels: torch.Tensor, ids: torch.Tensor, val_labels, val_ids, args, log) -> tuple[object, dict]:
    """Next-token CE on `ids` `[N, T]`; the state with the lowest validation CE (checked every `--eval-every`)."""
    import copy

    from vapi_trl.models import LlamaGenForClassToImage

    started = time.time()
    torch.manual_seed(args.seed)
    config = policy_config(args.codebook_size, ids.shape[1], args.policy_hidden, args.policy_layers, args.policy_ffn)
    policy = LlamaGenForClassToImage(config)
    policy.train()
    decay = [p for n, p in policy.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in policy.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.policy_lr,
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(args.seed)
    total = args.policy_steps
    order, cursor = torch.randperm(len(ids), generator=generator), 0
    losses, curve = [], []
    best = (float("inf"), 0, None)
    for step in range(total):
        if cursor + args.policy_batch > len(ids):
            order, cursor = torch.randperm(len(ids), generator=generator), 0
        index = order[cursor : cursor + args.policy_batch]
        cursor += args.policy_batch
        logits = policy(class_labels=labels[index], context_ids=ids[index, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), ids[index].flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        warm = min(1.0, (step + 1) / 50)
        for group in optimizer.param_groups:
            group["lr"] = args.policy_lr * warm * 0.5 * (1 + math.cos(math.pi * step / total))
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % args.eval_every == 0 or step + 1 == total:
            val_ce = teacher_forced_ce(policy, val_labels, val_ids)
            curve.append({"step": step + 1, "train_ce": float(np.mean(losses[-args.eval_every :])), "val_ce": val_ce})
            if val_ce < best[0]:
                best = (val_ce, step + 1, copy.deepcopy(policy.state_dict()))
            log(f"policy step {step + 1}/{total}: train CE {curve[-1]['train_ce']:.4f}, val CE {val_ce:.4f}")
    policy.load_state_dict(best[2])
    policy.eval()
    return policy, {
        "best_val_ce": best[0],
        "best_step": best[1],
        "steps": total,
        "epochs": round(total * args.policy_batch / len(ids), 2),
        "val_ce_curve": curve,
        "seconds": round(time.time() - started, 1),
    }


def train_classifiers(embedded, train_classifier, weights_dir: str, args, log) -> dict:
    """Train and save the feature classifier (on `train`) and the held-out classifier (on `holdout`); their stats."""
    test_images, test_labels = embedded.load_arrays("test")
    x_test = torch.from_numpy(test_images).float().div(127.5).sub(1)[:, None]
    stats = {}
    for name, split, seed in (("feature", "train", args.seed), ("heldout", "holdout", args.seed + 1)):
        images, labels = embedded.load_arrays(split)
        model, stats[name] = train_classifier(images, labels, seed=seed, epochs=args.classifier_epochs)
        with torch.no_grad():
            predictions = model(x_test)["logits"].argmax(1).numpy()
        stats[name]["trained_on"] = split
        stats[name]["test_accuracy"] = float((predictions == test_labels).mean())
        model.save_pretrained(os.path.join(weights_dir, "classifiers", name))
        log(f"classifier {name}: {stats[name]}")
    return stats


def policy_summary(policy, stats: dict, args) -> dict:
    return {
        "config": f"LlamaGen C2I hidden {args.policy_hidden}, {args.policy_layers} layers, 4 heads, FFN "
        f"{args.policy_ffn}, {args.grid**2} tokens, label dropout 0.1",
        "parameters": sum(p.numel() for p in policy.parameters()),
        **stats,
    }


def reference_batch(policy, test_labels: torch.Tensor, test_ids: torch.Tensor, count: int = 64) -> dict:
    return {
        "description": f"teacher-forced CE (nats/token, clean context, fp32) of the first {count} test images, their "
        "VQ codes from the shipped tokenizer",
        "num_images": count,
        "ce": teacher_forced_ce(policy, test_labels[:count], test_ids[:count]),
    }


def shipped_recipe_and_pool(embedded, data_dir: str, weights_dir: str, args, flag: str) -> tuple[dict, dict]:
    """
    For the partial rebuilds (`--policy-only`, `--decoder-only`): the shipped recipe, after checking that the split
    and VQ settings match it, and the pretraining pool rebuilt from `--raw-dir`, after checking that the splits it
    gives are the shipped ones (so the pool is the one the shipped weights were trained on).
    """
    with open(os.path.join(weights_dir, "recipe.json")) as f:
        recipe = json.load(f)
    for key in ("seed", "train", "val", "holdout", "test", "grid", "codebook_size"):
        if recipe["args"][key] != getattr(args, key):
            raise ValueError(
                f"{flag} keeps the shipped data and VQ codes, built with {key}={recipe['args'][key]!r}; got "
                f"{getattr(args, key)!r}. Pass the shipped value, or rebuild everything without {flag}."
            )
    embedded.DATA_FILE = os.path.join(data_dir, "fashion_mnist_subset.npz")
    embedded._load_npz.cache_clear()
    subset, pool = build_splits(args.raw_dir, args)
    for split in embedded.SPLITS:
        shipped_images, _ = embedded.load_arrays(split)
        if not np.array_equal(embedded.pad_images(subset[f"{split}_images"]), shipped_images):
            raise ValueError(f"--raw-dir rebuilds a {split!r} split that differs from the shipped one; use the "
                             "Fashion-MNIST files the shipped data was built from.")  # fmt: skip
    return recipe, pool


def command_line(argv) -> str:
    import sys

    return "python scripts/pretrain_tiny.py " + " ".join(argv if argv is not None else sys.argv[1:])


DECODER_ARGS = ("decoder_steps", "decoder_batch", "decoder_lr", "threads")


def record_decoder_round(recipe: dict, stats: dict, args, command: str) -> None:
    """
    Record one `--decoder-only` round in `recipe`: the tokenizer's top-level stats and `args` become this round's,
    and `image_tokenizer.decoder_rounds` keeps every round in order (the first entry is the build's own decoder
    fine-tune), so a decoder refined twice is not mistaken for one trained once with the last round's settings.
    """
    tokenizer = recipe["image_tokenizer"]
    rounds = tokenizer.get("decoder_rounds")
    if rounds is None:  # the first refinement: keep what the full build (or an older recipe) recorded as round 1
        first = {key: recipe["args"].get(key) for key in DECODER_ARGS}
        first.update({key: value for key, value in tokenizer.items() if key.startswith("decoder_")})
        first["test_reconstruction_mse_pm1"] = tokenizer.get("test_reconstruction_mse_pm1")
        first["command"] = recipe.get("decoder_command", recipe.get("command"))
        rounds = [first]
    rounds.append({**{key: getattr(args, key) for key in DECODER_ARGS}, **stats, "command": command})
    tokenizer.update(stats)
    tokenizer["decoder_rounds"] = rounds
    for key in DECODER_ARGS:
        recipe["args"][key] = getattr(args, key)
    recipe["decoder_command"] = command


def refine_decoder(embedded, image_tokenizer_class, data_dir: str, weights_dir: str, args, argv, log) -> dict:
    """`--decoder-only`: fine-tune the shipped VQ's decoder on the same pool; the code ids, policy and classifiers
    stay as shipped (checked: the test split's ids before and after are equal)."""
    recipe, pool = shipped_recipe_and_pool(embedded, data_dir, weights_dir, args, "--decoder-only")
    tokenizer_dir = os.path.join(weights_dir, "image_tokenizer")
    image_tokenizer = image_tokenizer_class.from_pretrained(tokenizer_dir)
    test_images, _ = embedded.load_arrays("test")
    test_pixels = embedded.to_pixels(test_images)
    ids_before = encode_all(image_tokenizer, test_pixels)
    stats = finetune_decoder(
        image_tokenizer.vq_model, embedded.to_pixels(embedded.pad_images(pool["images"])), args, log
    )
    image_tokenizer = image_tokenizer_class.from_vq_model(image_tokenizer.vq_model, image_size=embedded.IMAGE_SIZE)
    if not torch.equal(encode_all(image_tokenizer, test_pixels), ids_before):  # integer ids: exact
        raise RuntimeError("decoder fine-tuning changed the code ids; the encoder or codebook was not frozen")
    with torch.no_grad():
        reconstruction = torch.cat([image_tokenizer.decode(chunk) for chunk in ids_before.split(500)])
    stats["test_reconstruction_mse_pm1"] = (reconstruction - test_pixels).pow(2).mean().item()
    shutil.rmtree(tokenizer_dir)
    image_tokenizer.save_pretrained(tokenizer_dir)
    record_decoder_round(recipe, stats, args, command_line(argv))
    with open(os.path.join(weights_dir, "recipe.json"), "w") as f:
        json.dump(recipe, f, indent=2, ensure_ascii=False)
    log(f"decoder: {stats}")
    return recipe


def retrain_policy(embedded, image_tokenizer_class, data_dir: str, weights_dir: str, args, argv, log) -> dict:
    """`--policy-only`: the same pool (checked against the shipped splits), the shipped VQ, a new policy."""
    recipe, pool = shipped_recipe_and_pool(embedded, data_dir, weights_dir, args, "--policy-only")
    recipe_path = os.path.join(weights_dir, "recipe.json")
    image_tokenizer = image_tokenizer_class.from_pretrained(os.path.join(weights_dir, "image_tokenizer"))
    pool_ids = encode_all(image_tokenizer, embedded.to_pixels(embedded.pad_images(pool["images"])))
    val_images, val_labels = embedded.load_arrays("val")
    test_images, test_labels = embedded.load_arrays("test")
    val_ids = encode_all(image_tokenizer, embedded.to_pixels(val_images))
    test_ids = encode_all(image_tokenizer, embedded.to_pixels(test_images))
    log(f"pool of {len(pool_ids)} encoded with the shipped VQ")
    test_labels_t = torch.from_numpy(test_labels)
    policy, stats = train_policy(
        torch.from_numpy(pool["labels"]), pool_ids, torch.from_numpy(val_labels), val_ids, args, log
    )
    stats["test_ce"] = teacher_forced_ce(policy, test_labels_t, test_ids)
    policy_dir = os.path.join(weights_dir, "policy")
    shutil.rmtree(policy_dir)
    policy.save_pretrained(policy_dir)
    recipe["policy"] = policy_summary(policy, stats, args)
    recipe["reference_batch"] = reference_batch(policy, test_labels_t, test_ids)
    for key in ("policy_steps", "policy_batch", "policy_lr", "policy_hidden", "policy_layers", "policy_ffn",
                "eval_every", "threads"):  # fmt: skip
        recipe["args"][key] = getattr(args, key)
    recipe["policy_command"] = command_line(argv)
    with open(recipe_path, "w") as f:
        json.dump(recipe, f, indent=2, ensure_ascii=False)
    log(f"done: {json.dumps(recipe['reference_batch'])}")
    return recipe


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--raw-dir",
        default="/tmp/fm/usr/share/datasets/fashion-mnist",
        help="Folder with the four Fashion-MNIST *-idx*-ubyte.gz files.",
    )
    parser.add_argument("--out", default=DEMO, help="Demo folder to write data/ and weights/ into.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=5000, help="Shipped VA-π tuning split, drawn from the pool.")
    parser.add_argument("--val", type=int, default=2000, help="Validation split (early stopping, setting choice).")
    parser.add_argument("--holdout", type=int, default=2000, help="Held-out classifier split.")
    parser.add_argument("--test", type=int, default=4000, help="Test split (evaluation only).")
    parser.add_argument("--grid", type=int, default=8, help="Token grid per side (8 → 64 tokens per image).")
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--vq-steps", type=int, default=800)
    parser.add_argument("--vq-batch", type=int, default=32)
    parser.add_argument("--vq-lr", type=float, default=3e-3)
    parser.add_argument(
        "--decoder-steps", type=int, default=1000, help="Decoder-only fine-tuning steps after the VQ (codes frozen)."
    )
    parser.add_argument("--decoder-batch", type=int, default=64)
    parser.add_argument("--decoder-lr", type=float, default=1e-3)
    parser.add_argument("--policy-steps", type=int, default=600)
    parser.add_argument("--policy-batch", type=int, default=128)
    parser.add_argument("--policy-lr", type=float, default=2e-3)
    parser.add_argument("--policy-hidden", type=int, default=64, help="Policy hidden size (4 attention heads).")
    parser.add_argument("--policy-layers", type=int, default=2)
    parser.add_argument("--policy-ffn", type=int, default=160, help="Policy FFN (intermediate) size.")
    parser.add_argument("--eval-every", type=int, default=50, help="Validation-CE interval (policy steps).")
    parser.add_argument("--classifier-epochs", type=int, default=10)
    parser.add_argument(
        "--classifiers-only",
        action="store_true",
        help="Keep the shipped data, VQ and policy; retrain and save the two classifiers only.",
    )
    parser.add_argument(
        "--policy-only",
        action="store_true",
        help="Keep the shipped data, VQ and classifiers; rebuild the pool from --raw-dir, encode it with the shipped "
        "VQ and retrain and save the policy only (the split settings must match the shipped recipe).",
    )
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="Keep the shipped data, VQ encoder and codebook (so every code id), policy and classifiers; rebuild the "
        "pool from --raw-dir and fine-tune the VQ decoder only (the split settings must match the shipped recipe).",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads; 1 is far faster than 2 on a shared 2-core machine."
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()

    def log(message: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {message}", flush=True)

    import sys

    sys.path.insert(0, REPO)
    from vapi_trl.demo import embedded
    from vapi_trl.evaluation.small_benchmark import train_classifier
    from vapi_trl.models import ImageTokenizerProcessor

    data_dir = os.path.join(args.out, "data")
    weights_dir = os.path.join(args.out, "weights")
    if args.classifiers_only:
        embedded.DATA_FILE = os.path.join(data_dir, "fashion_mnist_subset.npz")
        recipe_path = os.path.join(weights_dir, "recipe.json")
        with open(recipe_path) as f:
            recipe = json.load(f)
        recipe["classifiers"] = train_classifiers(embedded, train_classifier, weights_dir, args, log)
        recipe["args"]["classifier_epochs"] = args.classifier_epochs
        recipe["classifiers_command"] = command_line(argv)
        with open(recipe_path, "w") as f:
            json.dump(recipe, f, indent=2, ensure_ascii=False)
        return recipe
    if args.policy_only and args.decoder_only:
        raise ValueError(
            "--policy-only and --decoder-only each keep what the other retrains; run them one after the other."
        )
    if args.decoder_only:
        return refine_decoder(embedded, ImageTokenizerProcessor, data_dir, weights_dir, args, argv, log)
    if args.policy_only:
        return retrain_policy(embedded, ImageTokenizerProcessor, data_dir, weights_dir, args, argv, log)
    os.makedirs(data_dir, exist_ok=True)
    subset, pool = build_splits(args.raw_dir, args)
    np.savez_compressed(os.path.join(data_dir, "fashion_mnist_subset.npz"), **subset)
    counts = ", ".join(f"{split} {len(subset[f'{split}_labels'])}" for split in embedded.SPLITS)
    with open(os.path.join(data_dir, "LICENSE"), "w") as f:
        f.write(LICENSE_TEXT.format(counts=counts, seed=args.seed))
    embedded.DATA_FILE = os.path.join(data_dir, "fashion_mnist_subset.npz")  # read back what was just written
    embedded._load_npz.cache_clear()
    log(f"splits written: {counts}; pretraining pool {len(pool['labels'])} (not shipped)")

    pool_pixels = embedded.to_pixels(embedded.pad_images(pool["images"]))
    val_images, val_labels = embedded.load_arrays("val")
    test_images, test_labels = embedded.load_arrays("test")
    val_pixels, test_pixels = embedded.to_pixels(val_images), embedded.to_pixels(test_images)

    vq, vq_stats = train_vq(pool_pixels, args, log)
    vq_stats.update(finetune_decoder(vq, pool_pixels, args, log))
    image_tokenizer = ImageTokenizerProcessor.from_vq_model(vq, image_size=embedded.IMAGE_SIZE)
    # The dataset path (PIL → CLIPImageProcessor) must give the same pixels as `to_pixels` used for training.
    rows = embedded.load_dataset("test", limit=8)
    via_processor = image_tokenizer.preprocess([row["image"] for row in rows])
    mismatch = (via_processor - test_pixels[:8]).abs().max().item()
    if mismatch > 1e-5:
        raise RuntimeError(f"processor preprocessing differs from to_pixels by {mismatch}")
    pool_ids = encode_all(image_tokenizer, pool_pixels)
    val_ids, test_ids = encode_all(image_tokenizer, val_pixels), encode_all(image_tokenizer, test_pixels)
    with torch.no_grad():
        test_reconstruction = torch.cat([image_tokenizer.decode(c) for c in test_ids.split(500)])
    vq_stats["test_reconstruction_mse_pm1"] = (test_reconstruction - test_pixels).pow(2).mean().item()
    vq_stats["codes_used_pool"] = int(pool_ids.unique().numel())
    log(f"vq: {vq_stats}")

    pool_labels, val_labels_t = torch.from_numpy(pool["labels"]), torch.from_numpy(val_labels)
    test_labels_t = torch.from_numpy(test_labels)
    policy, policy_stats = train_policy(pool_labels, pool_ids, val_labels_t, val_ids, args, log)
    policy_stats["test_ce"] = teacher_forced_ce(policy, test_labels_t, test_ids)

    if os.path.isdir(weights_dir):
        shutil.rmtree(weights_dir)
    policy.save_pretrained(os.path.join(weights_dir, "policy"))
    image_tokenizer.save_pretrained(os.path.join(weights_dir, "image_tokenizer"))
    classifier_stats = train_classifiers(embedded, train_classifier, weights_dir, args, log)

    recipe = {
        "script": "scripts/pretrain_tiny.py",
        "command": command_line(argv),
        "args": {k: v for k, v in vars(args).items() if k not in ("raw_dir", "out")},
        "data": {
            "source": "Fashion-MNIST (Debian dataset-fashion-mnist), MIT",
            "counts": counts,
            "pretraining_pool": len(pool["labels"]),
            "image_size": embedded.IMAGE_SIZE,
            "padding": "28→32 zero border",
        },
        "image_tokenizer": {
            "config": f"JanusVQVAE 32 px, {args.grid}×{args.grid} grid, {args.codebook_size} codes, embed_dim 16",
            "parameters": sum(p.numel() for p in vq.parameters()),
            **vq_stats,
        },
        "policy": policy_summary(policy, policy_stats, args),
        "classifiers": classifier_stats,
        "reference_batch": reference_batch(policy, test_labels_t, test_ids),
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {args.threads} torch threads",
    }
    with open(os.path.join(weights_dir, "recipe.json"), "w") as f:
        json.dump(recipe, f, indent=2, ensure_ascii=False)
    log(f"done: {json.dumps(recipe['reference_batch'])}")
    return recipe


if __name__ == "__main__":
    main()
