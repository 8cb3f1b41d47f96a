"""The typed seam between sampling and the loss (`StepBatch`) and the policy contract (`ImageTokenPolicy`)."""

import pytest
import torch
from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

from vapi_trl.batch import CONDITION_PREFIX, StepBatch
from vapi_trl.policy import ImageTokenPolicy, check_policy

from .conftest import make_image_dataset
from .test_trainer import make_trainer


def make_batch(num_images: int = 4, group: int = 2, tokens: int = 5, with_ref: bool = False) -> StepBatch:
    return StepBatch(
        condition={"class_labels": torch.arange(num_images), "caption_mask": torch.ones(num_images, 3)},
        context_ids=torch.arange(num_images)[:, None].repeat(1, tokens - 1),
        target_ids=torch.arange(num_images)[:, None].repeat(1, tokens),
        completion_ids=torch.arange(num_images)[:, None, None].repeat(1, group, tokens),
        old_per_token_logps=torch.arange(num_images, dtype=torch.float)[:, None, None].repeat(1, group, tokens),
        advantages=torch.arange(num_images, dtype=torch.float)[:, None].repeat(1, group),
        valid=torch.ones(num_images, dtype=torch.bool),
        ref_per_token_logps=torch.zeros(num_images, group, tokens) if with_ref else None,
    )


@pytest.mark.parametrize("with_ref", [False, True])
def test_step_batch_survives_trl_buffering(with_ref):
    """TRL shuffles and splits the flat dict (`GRPOTrainer._prepare_inputs`); every slice is still a StepBatch whose
    rows stay aligned across fields, condition included."""
    flat = make_batch(with_ref=with_ref).to_dict()
    assert ("ref_per_token_logps" in flat) == with_ref
    assert {key for key in flat if key.startswith(CONDITION_PREFIX)} == {
        "condition.class_labels",
        "condition.caption_mask",
    }
    for chunk in split_tensor_dict(shuffle_sequence_dict(flat), 2):
        batch = StepBatch.from_dict(chunk)
        assert set(batch.condition) == {"class_labels", "caption_mask"}
        rows = batch.condition["class_labels"]
        assert rows.shape == (2,)
        assert torch.equal(batch.context_ids[:, 0], rows) and torch.equal(batch.completion_ids[:, 0, 0], rows)
        assert torch.equal(batch.advantages[:, 0], rows.float())
        assert (batch.ref_per_token_logps is not None) == with_ref


def test_step_batch_refuses_unknown_and_missing_keys():
    flat = make_batch().to_dict()
    with pytest.raises(KeyError, match="unexpected key.*'class_labels'"):
        StepBatch.from_dict({**flat, "class_labels": torch.zeros(4)})  # would have become a forward argument
    del flat["valid"]
    with pytest.raises(KeyError, match="lacks \\['valid'\\]"):
        StepBatch.from_dict(flat)


def test_sampling_step_returns_a_step_batch(tmp_path, tiny_policy, tiny_image_tokenizer):
    trainer = make_trainer(
        tmp_path, tiny_policy, tiny_image_tokenizer, num_generations=2, per_device_train_batch_size=4
    )
    inputs = trainer._generate_and_score_completions([row for row in make_image_dataset(2) for _ in range(2)])
    batch = StepBatch.from_dict(inputs)
    assert list(batch.condition) == ["class_labels"] and batch.completion_ids.shape == (2, 2, 16)


def test_policies_satisfy_the_contract(tiny_policy):
    assert isinstance(tiny_policy, ImageTokenPolicy)
    check_policy(tiny_policy)


def test_trainer_names_what_a_policy_lacks(tmp_path, tiny_policy, tiny_image_tokenizer):
    class Incomplete(torch.nn.Module):
        codebook_size = 64

        def forward(self, class_labels):
            return class_labels

    with pytest.raises(
        TypeError,
        match=r"lacks \['num_image_tokens', 'condition_columns', "
        r"'drop_condition\(\)', 'forward\(context_ids=...\)', 'forward\(cfg_scale=...\)'\]",
    ):
        check_policy(Incomplete())
    with pytest.raises(TypeError, match="is not an image-token policy"):
        make_trainer(tmp_path, Incomplete(), tiny_image_tokenizer)
