"""Conversion of official LlamaGen checkpoints: GPT (C2I) and VQ-16, strict loading, file formats and errors."""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from vapi_trl.models import ImageTokenizerProcessor, LlamaGenForClassToImage
from vapi_trl.models.llamagen.convert_llamagen_to_hf import (
    convert_llamagen_checkpoints,
    convert_llamagen_gpt_state_dict,
    llamagen_gpt_config,
    llamagen_vq_config,
    load_official_checkpoint,
)

from .conftest import assert_close_scaled

pytestmark = pytest.mark.numerics

# Tiny official GPT: dim 32, 4 query heads, 2 KV heads (GQA), head_dim 8, FFN 64, 4x4 grid, 10 classes.
DIM, N_LAYER, N_HEAD, N_KV_HEAD, FFN, VOCAB, CLASSES, GRID = 32, 2, 4, 2, 64, 64, 10, 4
GPT_OVERRIDES = dict(
    hidden_size=DIM, num_hidden_layers=N_LAYER, num_attention_heads=N_HEAD, num_key_value_heads=N_KV_HEAD,
    intermediate_size=FFN, vocab_size=VOCAB, num_classes=CLASSES,
)  # fmt: skip


def official_gpt_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official `gpt.py` C2I layout (no `freqs_cis`: it is not a buffer there)."""
    gen = torch.Generator().manual_seed(seed)
    head_dim = DIM // N_HEAD
    kv_dim = N_KV_HEAD * head_dim

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=gen) * scale

    sd = {
        "cls_embedding.embedding_table.weight": rand(CLASSES + 1, DIM, scale=1.0),
        "tok_embeddings.weight": rand(VOCAB, DIM, scale=1.0),
    }
    for i in range(N_LAYER):
        sd[f"layers.{i}.attention.wqkv.weight"] = rand(DIM + 2 * kv_dim, DIM)
        sd[f"layers.{i}.attention.wo.weight"] = rand(DIM, DIM)
        sd[f"layers.{i}.feed_forward.w1.weight"] = rand(FFN, DIM)
        sd[f"layers.{i}.feed_forward.w3.weight"] = rand(FFN, DIM)
        sd[f"layers.{i}.feed_forward.w2.weight"] = rand(DIM, FFN)
        sd[f"layers.{i}.attention_norm.weight"] = 1 + rand(DIM, scale=0.1)
        sd[f"layers.{i}.ffn_norm.weight"] = 1 + rand(DIM, scale=0.1)
    sd["norm.weight"] = 1 + rand(DIM, scale=0.1)
    sd["output.weight"] = rand(VOCAB, DIM)
    return sd


# ---------------------------------------------------------------- official forward, re-implemented from gpt.py


def official_freqs_cis_2d(grid_size: int, n_elem: int, base: float = 10000.0, cls_token_num: int = 1) -> torch.Tensor:
    half_dim = n_elem // 2
    freqs = 1.0 / (base ** (torch.arange(0, half_dim, 2)[: (half_dim // 2)].float() / half_dim))
    t = torch.arange(grid_size)
    freqs = torch.outer(t, freqs)
    freqs_grid = torch.concat(
        [freqs[:, None, :].expand(-1, grid_size, -1), freqs[None, :, :].expand(grid_size, -1, -1)], dim=-1
    )
    cache = torch.stack([torch.cos(freqs_grid), torch.sin(freqs_grid)], dim=-1).flatten(0, 1)
    return torch.cat([torch.zeros(cls_token_num, n_elem // 2, 2), cache])


def official_apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    xshaped = x.float().reshape(*x.shape[:-1], -1, 2)  # interleaved pairs (2j, 2j+1)
    freqs_cis = freqs_cis.view(1, xshaped.size(1), 1, xshaped.size(3), 2)
    out = torch.stack(
        [
            xshaped[..., 0] * freqs_cis[..., 0] - xshaped[..., 1] * freqs_cis[..., 1],
            xshaped[..., 1] * freqs_cis[..., 0] + xshaped[..., 0] * freqs_cis[..., 1],
        ],
        dim=-1,
    )
    return out.flatten(3).type_as(x)


def official_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def official_decoder(
    sd: dict[str, torch.Tensor], h: torch.Tensor, cls_token_num: int = 1, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Official `Transformer` layers, norm and head on the input embeddings `h` `[B, L, D]` (condition slots first,
    dropouts off); causal unless `attn_mask` is given. Returns logits `[B, N, V]` read from `cls_token_num - 1`."""
    head_dim, kv_dim = DIM // N_HEAD, N_KV_HEAD * (DIM // N_HEAD)
    bsz, seqlen, _ = h.shape
    freqs_cis = official_freqs_cis_2d(GRID, head_dim, cls_token_num=cls_token_num)[:seqlen]
    for i in range(N_LAYER):
        x = official_rms_norm(h, sd[f"layers.{i}.attention_norm.weight"])
        xq, xk, xv = (x @ sd[f"layers.{i}.attention.wqkv.weight"].T).split([DIM, kv_dim, kv_dim], dim=-1)
        xq = official_apply_rotary_emb(xq.view(bsz, seqlen, N_HEAD, head_dim), freqs_cis).transpose(1, 2)
        xk = official_apply_rotary_emb(xk.view(bsz, seqlen, N_KV_HEAD, head_dim), freqs_cis).transpose(1, 2)
        xv = xv.view(bsz, seqlen, N_KV_HEAD, head_dim).transpose(1, 2)
        xk = xk.repeat_interleave(N_HEAD // N_KV_HEAD, dim=1)
        xv = xv.repeat_interleave(N_HEAD // N_KV_HEAD, dim=1)
        out = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=attn_mask, is_causal=attn_mask is None)
        h = h + out.transpose(1, 2).reshape(bsz, seqlen, DIM) @ sd[f"layers.{i}.attention.wo.weight"].T
        x = official_rms_norm(h, sd[f"layers.{i}.ffn_norm.weight"])
        ffn = F.silu(x @ sd[f"layers.{i}.feed_forward.w1.weight"].T) * (x @ sd[f"layers.{i}.feed_forward.w3.weight"].T)
        h = h + ffn @ sd[f"layers.{i}.feed_forward.w2.weight"].T
    h = official_rms_norm(h, sd["norm.weight"])
    return (h @ sd["output.weight"].T).float()[:, cls_token_num - 1 :]


def official_forward(sd: dict[str, torch.Tensor], labels: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Teacher-forced training forward of official `Transformer` (c2i, dropouts off): logits `[B, N, V]`."""
    h = torch.cat(
        [sd["cls_embedding.embedding_table.weight"][labels][:, None], sd["tok_embeddings.weight"][context]], 1
    )
    return official_decoder(sd, h)


# ---------------------------------------------------------------- official VQ layout, from vq_model.py


def official_vq_shapes(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=32, n_e=64, e_dim=8):
    """Names and shapes of official `VQModel` (Encoder/Decoder with `conv_blocks`, `res`, `attn`, `mid` lists)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, c_out, c_in, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c_out, c_in, k, k), (c_out,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def resnet(name, c_in, c_out):
        norm(f"{name}.norm1", c_in), conv(f"{name}.conv1", c_out, c_in, 3)
        norm(f"{name}.norm2", c_out), conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_out, c_in, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    levels = len(ch_mult)
    conv("encoder.conv_in", ch, 3, 3)
    in_ch_mult = (1, *ch_mult)
    for i in range(levels):
        block_in, block_out = ch * in_ch_mult[i], ch * ch_mult[i]
        for j in range(num_res_blocks):
            resnet(f"encoder.conv_blocks.{i}.res.{j}", block_in, block_out)
            block_in = block_out
            if i == levels - 1:
                attn(f"encoder.conv_blocks.{i}.attn.{j}", block_in)
        if i != levels - 1:
            conv(f"encoder.conv_blocks.{i}.downsample.conv", block_in, block_in, 3)
    (
        resnet("encoder.mid.0", block_in, block_in),
        attn("encoder.mid.1", block_in),
        resnet("encoder.mid.2", block_in, block_in),
    )
    norm("encoder.norm_out", block_in), conv("encoder.conv_out", z_channels, block_in, 3)

    block_in = ch * ch_mult[-1]
    conv("decoder.conv_in", block_in, z_channels, 3)
    (
        resnet("decoder.mid.0", block_in, block_in),
        attn("decoder.mid.1", block_in),
        resnet("decoder.mid.2", block_in, block_in),
    )
    for i in range(levels):
        block_out = ch * ch_mult[levels - i - 1]
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.conv_blocks.{i}.res.{j}", block_in, block_out)
            block_in = block_out
            if i == 0:
                attn(f"decoder.conv_blocks.{i}.attn.{j}", block_in)
        if i != levels - 1:
            conv(f"decoder.conv_blocks.{i}.upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", block_in), conv("decoder.conv_out", 3, block_in, 3)
    shapes["quantize.embedding.weight"] = (n_e, e_dim)
    shapes["quantize.codebook_used"] = (65536,)
    conv("quant_conv", e_dim, z_channels, 1), conv("post_quant_conv", z_channels, e_dim, 1)
    return shapes


TINY_VQ = dict(codebook_size=64, codebook_embed_dim=8, ch_mult=(1, 1, 2, 2), z_channels=32, base_channels=32,
               num_res_blocks=1)  # fmt: skip


def official_vq_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = official_vq_shapes()
    return {name: torch.randn(*shape, generator=gen) * 0.1 for name, shape in shapes.items()}


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("layout", ["ddp", "raw"])
def test_gpt_conversion_matches_official_forward(tmp_path, layout):
    sd = official_gpt_state_dict()
    path = tmp_path / "c2i_tiny.pt"
    if layout == "ddp":  # B/L/XL files: training dict with the pickled argparse args
        torch.save({"model": sd, "args": argparse.Namespace(gpt_model="GPT-tiny"), "steps": 10}, path)
    else:  # XXL/3B files: the FSDP state dict itself
        torch.save(sd, path)
    written = convert_llamagen_checkpoints(
        tmp_path / "out", gpt_ckpt=path, image_size=GRID * 16, gpt_overrides=GPT_OVERRIDES, vq_overrides=None
    )
    assert written == {"policy": str(tmp_path / "out" / "policy")}
    model = LlamaGenForClassToImage.from_pretrained(written["policy"]).eval()
    assert model.config.block_size == GRID * GRID and model.config.num_key_value_heads == N_KV_HEAD

    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 3, 9])
    context = torch.randint(0, VOCAB, (3, GRID * GRID - 1), generator=gen)
    with torch.no_grad():
        ours = model(class_labels=labels, context_ids=context).logits
    reference = official_forward(sd, labels, context)
    assert ours.shape == reference.shape == (3, GRID * GRID, VOCAB)
    assert_close_scaled(ours, reference)


def test_gpt_conversion_kv_cache_matches_teacher_forcing(tmp_path):
    torch.save(official_gpt_state_dict(seed=2), tmp_path / "c2i.pt")
    written = convert_llamagen_checkpoints(tmp_path / "o", gpt_ckpt=tmp_path / "c2i.pt", image_size=64,
                                           gpt_overrides=GPT_OVERRIDES)  # fmt: skip
    model = LlamaGenForClassToImage.from_pretrained(written["policy"]).eval()
    labels, ids = torch.tensor([1, 2]), torch.randint(0, VOCAB, (2, GRID * GRID - 1))
    with torch.no_grad():
        assert_close_scaled(model.stepwise_logits(labels, ids), model(class_labels=labels, context_ids=ids).logits)


def test_preset_config_and_block_size():
    config = llamagen_gpt_config("GPT-XXL", image_size=384)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1536, 48, 24)
    assert config.block_size == 576 and config.intermediate_size == 4096
    assert llamagen_gpt_config("B", image_size=256, num_classes=None).block_size == 256
    with pytest.raises(ValueError, match="--hidden_size, --num_hidden_layers, --num_attention_heads"):
        llamagen_gpt_config(None, image_size=256, hidden_size=64)


def test_gpt_strict_load_lists_missing_and_unexpected_keys(tmp_path):
    sd = official_gpt_state_dict()
    del sd["layers.1.feed_forward.w2.weight"]
    sd["layers.0.attention.extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as info:
        convert_llamagen_checkpoints(tmp_path / "o", gpt_ckpt=tmp_path / "bad.pt", image_size=64,
                                     gpt_overrides=GPT_OVERRIDES)  # fmt: skip
    message = str(info.value)
    assert "Missing keys (1): model.layers.1.mlp.down_proj.weight" in message
    assert "Unexpected keys (1): layers.0.attention.extra.weight" in message


def test_gpt_wrong_preset_is_a_clear_error(tmp_path):
    torch.save({"model": official_gpt_state_dict()}, tmp_path / "c2i.pt")
    overrides = {**GPT_OVERRIDES, "num_hidden_layers": 3}
    with pytest.raises(ValueError, match=r"(?s)Missing keys .*model\.layers\.2\..*checkpoint has 2 layers"):
        convert_llamagen_checkpoints(tmp_path / "o", gpt_ckpt=tmp_path / "c2i.pt", image_size=64,
                                     gpt_overrides=overrides)  # fmt: skip
    overrides = {**GPT_OVERRIDES, "num_key_value_heads": N_HEAD}
    with pytest.raises(ValueError, match="wqkv.weight has 64 rows"):
        convert_llamagen_checkpoints(tmp_path / "o", gpt_ckpt=tmp_path / "c2i.pt", image_size=64,
                                     gpt_overrides=overrides)  # fmt: skip


def test_t2i_checkpoint_is_rejected(tmp_path):
    sd = official_gpt_state_dict()
    del sd["cls_embedding.embedding_table.weight"]
    sd["cls_embedding.cap_proj.fc1.weight"] = torch.zeros(DIM, 16)
    sd["cls_embedding.uncond_embedding"] = torch.zeros(120, 16)
    with pytest.raises(ValueError, match="text-to-image checkpoint"):
        convert_llamagen_gpt_state_dict(sd, llamagen_gpt_config(None, image_size=64, **GPT_OVERRIDES))


def test_unreadable_files_give_clear_errors(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_official_checkpoint(tmp_path / "notes.pt")
    torch.save({"optimizer": {"lr": 1e-4}, "steps": 3}, tmp_path / "opt.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_official_checkpoint(tmp_path / "opt.pt")
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(tmp_path / "missing.pt")


class _Custom:  # a pickled custom class: rejected by weights_only=True
    pass


def test_pickled_custom_objects_are_refused(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}, "args": _Custom()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_official_checkpoint(tmp_path / "evil.pt")


def test_module_prefix_is_stripped(tmp_path):
    torch.save({"module": {"module.norm.weight": torch.ones(3)}}, tmp_path / "m.pt")
    assert list(load_official_checkpoint(tmp_path / "m.pt")) == ["norm.weight"]


def test_vq_conversion_strict_and_values(tmp_path):
    sd = official_vq_state_dict()
    torch.save({"model": sd, "args": argparse.Namespace(vq_model="VQ-16")}, tmp_path / "vq.pt")
    written = convert_llamagen_checkpoints(tmp_path / "out", vq_ckpt=tmp_path / "vq.pt", image_size=32,
                                           vq_overrides=TINY_VQ)  # fmt: skip
    processor = ImageTokenizerProcessor.from_pretrained(written["image_tokenizer"])
    vq = processor.vq_model.state_dict()
    assert len(vq) == len(sd) - 1  # everything but `quantize.codebook_used`
    pairs = {
        "encoder.conv_blocks.0.res.0.conv1.weight": "encoder.down.0.block.0.conv1.weight",
        "encoder.conv_blocks.3.attn.0.q.weight": "encoder.down.3.attn.0.q.weight",
        "encoder.conv_blocks.2.res.0.nin_shortcut.weight": "encoder.down.2.block.0.nin_shortcut.weight",
        "encoder.mid.1.proj_out.weight": "encoder.mid.attn_1.proj_out.weight",
        "decoder.mid.2.norm2.bias": "decoder.mid.block_2.norm2.bias",
        "decoder.conv_blocks.0.attn.1.v.bias": "decoder.up.0.attn.1.v.bias",
        "decoder.conv_blocks.2.res.0.nin_shortcut.weight": "decoder.up.2.block.0.nin_shortcut.weight",
        "decoder.conv_blocks.2.upsample.conv.weight": "decoder.up.2.upsample.conv.weight",
        "post_quant_conv.weight": "post_quant_conv.weight",
    }
    for official, ours in pairs.items():
        assert torch.equal(sd[official], vq[ours]), (official, ours)
    # The codebook is stored l2-normalised (cosine-nearest codes, the official quantizer).
    torch.testing.assert_close(vq["quantize.embedding.weight"], F.normalize(sd["quantize.embedding.weight"], dim=-1))
    assert processor.grid_size == 4 and processor.codebook_size == 64
    ids = processor.encode(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert processor.decode(ids).shape == (2, 3, 32, 32)


def test_vq_full_size_official_layout_matches_janus():
    # The real VQ-16 (ch 128, ch_mult 1,1,2,2,4, 2 res blocks, z 256, 16384x8): names and shapes map one to one.
    from transformers import JanusVQVAE

    from vapi_trl.models.llamagen.convert_llamagen_to_hf import convert_llamagen_vq_state_dict

    shapes = official_vq_shapes(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256, n_e=16384)
    meta = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    converted = convert_llamagen_vq_state_dict(meta)
    with torch.device("meta"):
        janus = JanusVQVAE(llamagen_vq_config(384)).state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in janus.items()}
    assert llamagen_vq_config(384).num_patches == 24 and llamagen_vq_config(256).num_patches == 16


def test_vq_mismatch_lists_keys(tmp_path):
    sd = official_vq_state_dict()
    torch.save({"model": sd}, tmp_path / "vq.pt")
    with pytest.raises(ValueError, match=r"(?s)VQ checkpoint does not match.*Missing keys"):
        convert_llamagen_checkpoints(tmp_path / "o", vq_ckpt=tmp_path / "vq.pt", image_size=32,
                                     vq_overrides={**TINY_VQ, "ch_mult": (1, 1, 2, 2, 2)})  # fmt: skip


def test_rope_table_matches_official_angles():
    # Sanity of the test's reference itself: row/col halves, zero condition slot.
    table = official_freqs_cis_2d(4, 8)
    assert table.shape == (17, 4, 2) and table[0].abs().sum() == 0
    assert math.isclose(table[1 + 5, 0, 1].item(), math.sin(1.0), rel_tol=1e-6)  # token 5: row 1, col 1
