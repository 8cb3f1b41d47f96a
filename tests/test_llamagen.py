import pytest
import torch
from transformers import AutoConfig, AutoModel
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import vapi_trl.models  # noqa: F401  (registers the Auto classes)
from vapi_trl.models.llamagen import (
    LlamaGen2DRotaryEmbedding,
    LlamaGenConfig,
    LlamaGenForClassToImage,
    permute_half_to_interleaved,
    permute_interleaved_to_half,
)
from .conftest import assert_argmax_agrees, assert_close_scaled

pytestmark = pytest.mark.numerics


def tiny_config(**overrides) -> LlamaGenConfig:
    kwargs = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=64, num_classes=10, block_size=16
    )
    return LlamaGenConfig(**{**kwargs, **overrides})


@pytest.fixture
def tiny_model() -> LlamaGenForClassToImage:
    torch.manual_seed(0)
    return LlamaGenForClassToImage(tiny_config()).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    class_labels = torch.tensor([0, 3, 9])
    context_ids = torch.randint(0, 64, (3, 15), generator=generator)
    return class_labels, context_ids


# Official LlamaGen (autoregressive/models/gpt.py), transcribed: complex-pair 2D RoPE on interleaved dims.
def official_precompute_freqs_cis_2d(grid_size: int, n_elem: int, base: int = 10000, cls_token_num: int = 120):
    half_dim = n_elem // 2
    freqs = 1.0 / (base ** (torch.arange(0, half_dim, 2)[: (half_dim // 2)].float() / half_dim))
    t = torch.arange(grid_size, device=freqs.device)
    freqs = torch.outer(t, freqs)
    freqs_grid = torch.concat(
        [freqs[:, None, :].expand(-1, grid_size, -1), freqs[None, :, :].expand(grid_size, -1, -1)], dim=-1
    )
    cache_grid = torch.stack([torch.cos(freqs_grid), torch.sin(freqs_grid)], dim=-1)
    cache = cache_grid.flatten(0, 1)
    return torch.cat([torch.zeros(cls_token_num, n_elem // 2, 2), cache])


def official_apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    # x: (bs, seq_len, n_head, head_dim), freqs_cis: (seq_len, head_dim // 2, 2)
    xshaped = x.float().reshape(*x.shape[:-1], -1, 2)
    freqs_cis = freqs_cis.view(1, xshaped.size(1), 1, xshaped.size(3), 2)
    x_out2 = torch.stack(
        [
            xshaped[..., 0] * freqs_cis[..., 0] - xshaped[..., 1] * freqs_cis[..., 1],
            xshaped[..., 1] * freqs_cis[..., 0] + xshaped[..., 0] * freqs_cis[..., 1],
        ],
        dim=-1,
    )
    return x_out2.flatten(3).type_as(x)


class TestConfig:
    @pytest.mark.parametrize(
        "name, expected",
        [("GPT-B", 110.9e6), ("GPT-L", 342.9e6), ("GPT-XL", 774.7e6), ("GPT-XXL", 1.41e9), ("GPT-3B", 3.10e9)],
    )
    def test_preset_parameter_counts(self, name, expected):
        config = LlamaGenConfig.from_preset(name)
        with torch.device("meta"):
            model = LlamaGenForClassToImage(config)
        num_params = sum(p.numel() for p in model.parameters())
        assert abs(num_params - expected) / expected < 0.01

    def test_derived_intermediate_size(self):
        sizes = {name: LlamaGenConfig.from_preset(name).intermediate_size for name in ["B", "L", "XL", "XXL", "3B"]}
        assert sizes == {"B": 2048, "L": 2816, "XL": 3584, "XXL": 4096, "3B": 8704}
        assert LlamaGenConfig(hidden_size=768, ffn_dim_multiplier=1.5).intermediate_size == 3072
        assert LlamaGenConfig(intermediate_size=100).intermediate_size == 100

    @pytest.mark.parametrize(
        "overrides, match",
        [
            ({"block_size": 250}, "perfect square"),
            ({"hidden_size": 100}, "divisible by `num_attention_heads`"),
            ({"hidden_size": 24, "num_attention_heads": 4}, "multiple of 4"),
            ({"num_key_value_heads": 5}, "multiple of `num_key_value_heads`"),
            ({"task": "t2v"}, "'c2i' or 't2i'"),
            ({"cls_token_num": 120}, "must be 1 for task='c2i'"),
            ({"class_dropout_prob": 1.0}, r"\[0, 1\)"),
        ],
    )
    def test_validation(self, overrides, match):
        with pytest.raises(ValueError, match=match):
            LlamaGenConfig(**overrides)

    def test_unknown_preset(self):
        with pytest.raises(ValueError, match="Unknown LlamaGen preset"):
            LlamaGenConfig.from_preset("GPT-M")

    def test_backbone_config(self):
        config = tiny_config()
        llama = config.to_llama_config()
        assert (llama.attention_bias, llama.mlp_bias, llama.tie_word_embeddings) == (False, False, False)
        assert llama.max_position_embeddings == 17
        assert llama.rms_norm_eps == 1e-5 and llama.intermediate_size == config.intermediate_size


class TestRope:
    def test_matches_official_2d_rope(self):
        torch.manual_seed(0)
        n_head, head_dim, grid, cls_token_num, batch = 3, 16, 4, 2, 2
        seq_len = cls_token_num + grid * grid
        hidden, in_features = torch.randn(batch, seq_len, 8), 8
        wq = torch.randn(n_head * head_dim, in_features)
        wk = torch.randn(n_head * head_dim, in_features)

        freqs_cis = official_precompute_freqs_cis_2d(grid, head_dim, cls_token_num=cls_token_num)
        q_off = official_apply_rotary_emb((hidden @ wq.T).view(batch, seq_len, n_head, head_dim), freqs_cis)
        k_off = official_apply_rotary_emb((hidden @ wk.T).view(batch, seq_len, n_head, head_dim), freqs_cis)

        rope = LlamaGen2DRotaryEmbedding(head_dim=head_dim, grid_size=grid, cls_token_num=cls_token_num)
        cos, sin = rope(hidden, torch.arange(seq_len).unsqueeze(0))
        assert torch.all(cos[:, :cls_token_num] == 0) and torch.all(sin[:, :cls_token_num] == 0)
        assert torch.all(cos[:, cls_token_num] == 1) and torch.all(sin[:, cls_token_num] == 0)  # row 0, column 0

        def heads(x):  # (batch, seq, n_head * head_dim) -> (batch, n_head, seq, head_dim)
            return x.view(batch, seq_len, n_head, head_dim).transpose(1, 2)

        q_hf, k_hf = apply_rotary_pos_emb(
            heads(hidden @ permute_interleaved_to_half(wq, n_head).T),
            heads(hidden @ permute_interleaved_to_half(wk, n_head).T),
            cos,
            sin,
        )
        # Rotated vectors are the official ones with each head's dims reordered to the half-split layout.
        q_off_perm = permute_interleaved_to_half(q_off.reshape(batch * seq_len, -1).T, n_head).T
        assert_close_scaled(q_hf.transpose(1, 2).reshape(batch * seq_len, -1), q_off_perm)
        assert torch.all(q_hf[:, :, :cls_token_num] == 0) and torch.all(k_hf[:, :, :cls_token_num] == 0)
        # Hence identical attention scores.
        scores_off = torch.einsum("bqhd,bkhd->bhqk", q_off, k_off)
        scores_hf = torch.einsum("bhqd,bhkd->bhqk", q_hf, k_hf)
        assert_close_scaled(scores_hf, scores_off)

    def test_permutation_helpers(self):
        weight = torch.arange(2 * 8 * 3, dtype=torch.float32).view(16, 3)
        permuted = permute_interleaved_to_half(weight, n_heads=2)
        # Head 0: rows 0,2,4,6 then 1,3,5,7.
        assert permuted[:8, 0].tolist() == [0.0, 6.0, 12.0, 18.0, 3.0, 9.0, 15.0, 21.0]
        assert torch.equal(permute_half_to_interleaved(permuted, n_heads=2), weight)
        bias = torch.arange(16.0)
        assert torch.equal(permute_half_to_interleaved(permute_interleaved_to_half(bias, 4), 4), bias)
        with pytest.raises(ValueError, match="even head dimension"):
            permute_interleaved_to_half(torch.zeros(12, 2), n_heads=4)


class TestModel:
    def test_parameter_names_and_properties(self, tiny_model):
        names = {name for name, _ in tiny_model.named_parameters()}
        assert {"class_embed.weight", "lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"} <= names
        assert "model.layers.0.self_attn.q_proj.weight" in names and "model.layers.1.mlp.down_proj.weight" in names
        assert tiny_model.class_embed.weight.shape == (11, 32)
        assert tiny_model.get_input_embeddings() is tiny_model.model.embed_tokens
        assert (tiny_model.codebook_size, tiny_model.num_image_tokens, tiny_model.grid_size) == (64, 16, 4)
        assert tiny_model.null_class_id == 10
        assert tiny_model.uncond(torch.tensor([1, 2])).tolist() == [10, 10]
        assert tiny_model.generation_config is not None
        assert len(tiny_model.trainable_parameters()) == len(names)

    @pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
    def test_teacher_forcing_matches_kv_cache(self, tiny_model, batch, cfg_scale):
        class_labels, context_ids = batch
        with torch.no_grad():
            logits = tiny_model(class_labels, context_ids, cfg_scale=cfg_scale).logits
        assert logits.shape == (3, 16, 64) and logits.dtype == torch.float32
        stepwise = tiny_model.stepwise_logits(class_labels, context_ids, cfg_scale=cfg_scale)
        assert_close_scaled(logits, stepwise)

    def test_cfg_formula(self, tiny_model, batch):
        class_labels, context_ids = batch
        with torch.no_grad():
            cond = tiny_model(class_labels, context_ids).logits
            uncond = tiny_model(tiny_model.uncond(class_labels), context_ids).logits
            guided = tiny_model(class_labels, context_ids, cfg_scale=2.5).logits
        assert_close_scaled(guided, uncond + 2.5 * (cond - uncond))

    def test_logit_t_ignores_context_from_t(self, tiny_model, batch):
        class_labels, context_ids = batch
        changed = context_ids.clone()
        changed[:, 7:] = (changed[:, 7:] + 1) % 64
        with torch.no_grad():
            a, b = tiny_model(class_labels, context_ids).logits, tiny_model(class_labels, changed).logits
        assert_close_scaled(a[:, :8], b[:, :8])
        assert not torch.allclose(a[:, 8:], b[:, 8:])

    def test_class_slot_only(self, tiny_model, batch):
        class_labels, context_ids = batch
        with torch.no_grad():
            first = tiny_model(class_labels).logits
            full = tiny_model(class_labels, context_ids).logits
        assert first.shape == (3, 1, 64)
        assert_close_scaled(first, full[:, :1])

    def test_bad_inputs(self, tiny_model, batch):
        class_labels, context_ids = batch
        with pytest.raises(ValueError, match=r"\(3, 15\)"):
            tiny_model(class_labels, context_ids[:, :10])
        with pytest.raises(ValueError, match=r"\(3, 15\)"):
            tiny_model(class_labels[:2], context_ids)
        with pytest.raises(ValueError, match="class_labels"):
            tiny_model(class_labels.float(), context_ids)
        with pytest.raises(TypeError, match="context_ids"):
            tiny_model(class_labels, context_ids.float())

    @pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
    def test_greedy_sample_is_argmax_of_teacher_forcing(self, tiny_model, cfg_scale):
        class_labels = torch.tensor([1, 5, 10])
        ids = tiny_model.sample(class_labels, cfg_scale=cfg_scale, greedy=True)
        assert ids.shape == (3, 16) and ids.dtype == torch.long
        with torch.no_grad():
            logits = tiny_model(class_labels, ids[:, :-1], cfg_scale=cfg_scale).logits
        assert_argmax_agrees(logits, ids)

    def test_sample_is_reproducible_with_generator(self, tiny_model):
        class_labels = torch.tensor([2, 4])
        draw = lambda seed: tiny_model.sample(  # noqa: E731
            class_labels, cfg_scale=2.0, top_k=10, top_p=0.9, generator=torch.Generator().manual_seed(seed)
        )
        first = draw(0)
        assert torch.equal(first, draw(0))
        assert first.min() >= 0 and first.max() < 64

    def test_save_and_load_round_trip(self, tiny_model, batch, tmp_path):
        class_labels, context_ids = batch
        tiny_model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists()
        with torch.no_grad():
            expected = tiny_model(class_labels, context_ids).logits
            reloaded = LlamaGenForClassToImage.from_pretrained(tmp_path).eval()
            torch.testing.assert_close(reloaded(class_labels, context_ids).logits, expected, rtol=0, atol=0)

            config = AutoConfig.from_pretrained(tmp_path)
            assert isinstance(config, LlamaGenConfig)
            saved, original = config.to_dict(), tiny_model.config.to_dict()
            assert {**saved, "_name_or_path": ""} == {**original, "architectures": saved["architectures"]}
            auto_model = AutoModel.from_pretrained(tmp_path).eval()
            assert isinstance(auto_model, LlamaGenForClassToImage)
            torch.testing.assert_close(auto_model(class_labels, context_ids).logits, expected, rtol=0, atol=0)

    def test_attn_implementation_reaches_backbone(self, tmp_path):
        model = LlamaGenForClassToImage(tiny_config())
        model.save_pretrained(tmp_path)
        eager = LlamaGenForClassToImage.from_pretrained(tmp_path, attn_implementation="eager")
        assert eager.model.config._attn_implementation == "eager"

    def test_gradient_checkpointing_backward(self, batch):
        class_labels, context_ids = batch
        model = LlamaGenForClassToImage(tiny_config()).train()
        model.activation_checkpointing_enable()  # transformers 5.23 name of `gradient_checkpointing_enable`
        assert all(layer.gradient_checkpointing for layer in model.model.layers)
        logits = model(class_labels, context_ids, cfg_scale=2.0).logits
        targets = torch.cat((context_ids, context_ids[:, :1]), dim=1)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
        for name, param in model.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
