"""Everything computed from rows is computed on the final layout: log-probs, advantages, the logged table."""

from __future__ import annotations

import pytest
import torch
import trl
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from dapo_trl import DAPOTrainer
from dapo_trl.testing import build_char_tokenizer, instantiate, special_token_ids
from tests.helpers import logged, make_config


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny GPT-2: absolute position embeddings, so a row whose left padding changes gets other log-probs."""
    tokenizer = build_char_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=256,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **special_token_ids(tokenizer),
    )
    model = instantiate(GPT2LMHeadModel, config, tokenizer)
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def mixed_length_dataset(n: int = 32) -> Dataset:
    """Prompts from 2 to ~40 characters; kind 0/1 degenerate, 2/3 informative (several rounds, mixed widths)."""
    prompts = [("1+" * (1 + (i * 7) % 19))[:-1] + "=" for i in range(n)]
    return Dataset.from_dict({"prompt": prompts, "kind": [i % 4 for i in range(n)]})


def kind_reward(completions, kind, **kwargs):
    return [1.0 if k == 0 else 0.0 if k == 1 else float(i % 2) for i, k in enumerate(kind)]


def test_kl_exactly_zero_at_learning_rate_zero_on_absolute_positions(gpt2_dir, tmp_path):
    """policy == reference (lr 0): the KL is exactly 0 only if the reference log-probs were computed on the layout
    the loss sees. Rows come from several rounds with prompts of very different lengths."""
    args = make_config(
        tmp_path,
        learning_rate=0.0,
        beta=0.1,
        max_steps=4,
        steps_per_generation=2,
        max_completion_length=6,
        mask_truncated_completions=False,
    )
    trainer = DAPOTrainer(model=gpt2_dir, reward_funcs=kind_reward, args=args, train_dataset=mixed_length_dataset())
    trainer.train()
    assert max(logged(trainer, "dynamic_sampling/rounds")) > 1  # rows of several rounds were assembled
    kl = logged(trainer, "kl")
    assert len(kl) == 4
    assert max(abs(value) for value in kl) <= 1e-7, kl


@pytest.mark.parametrize(
    "scale_rewards, aggregation",
    [
        ("group", "sum_then_normalize"),
        ("none", "sum_then_normalize"),
        ("batch", "sum_then_normalize"),
        ("group", "normalize_then_sum"),
    ],
)
def test_advantages_equal_trl_when_one_round_keeps_everything(
    tiny_model_dir, tmp_path, monkeypatch, scale_rewards, aggregation
):
    """Every group informative and no oversampling in the first batch: the trained batch is TRL's own round, so the
    advantages computed after assembly must equal the ones TRL computed inside the round."""
    trl_advantages = []
    original = trl.GRPOTrainer._generate_and_score_completions

    def recording(self, inputs):
        output = original(self, inputs)
        trl_advantages.append(output["advantages"].clone())
        return output

    monkeypatch.setattr(trl.GRPOTrainer, "_generate_and_score_completions", recording)

    def length_reward(completions, **kwargs):
        return [0.1 * len(c) + 0.01 * i for i, c in enumerate(completions)]

    informative = Dataset.from_dict({"prompt": [f"{i}+{i}=" for i in range(16)], "kind": [2, 3] * 8})
    args = make_config(
        tmp_path,
        max_steps=1,
        scale_rewards=scale_rewards,
        multi_objective_aggregation=aggregation,
        reward_weights=[1.0, 0.5],
        mask_truncated_completions=False,
    )
    trained = []

    class Recording(DAPOTrainer):
        def _dynamic_sampling(self, inputs):
            local = super()._dynamic_sampling(inputs)
            trained.append(local["advantages"].clone())
            return local

    trainer = Recording(
        model=tiny_model_dir, reward_funcs=[kind_reward, length_reward], args=args, train_dataset=informative
    )
    trainer.train()
    assert logged(trainer, "dynamic_sampling/rounds") == [1.0]
    assert logged(trainer, "dynamic_sampling/groups_surplus") == [0.0]
    torch.testing.assert_close(trained[0], trl_advantages[0], rtol=1e-5, atol=1e-6)
    # the completions table holds the trained rows with their advantages
    assert list(trainer._logs["advantages"]) == pytest.approx(trained[0].tolist(), abs=1e-6)


def test_completions_table_shows_trained_rows(tiny_model_dir, tmp_path):
    """Several rounds: the table has one generation batch of rows, all from kept groups (never a dropped one)."""
    args = make_config(tmp_path, max_steps=1, mask_truncated_completions=False)
    dataset = Dataset.from_dict({"prompt": [f"{i}+{i}=" for i in range(64)], "kind": [i % 4 for i in range(64)]})
    trainer = DAPOTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=dataset)
    trainer.train()
    assert logged(trainer, "dynamic_sampling/rounds")[0] > 1
    rewards = list(trainer._logs["rewards"]["kind_reward"])
    assert len(rewards) == args.generation_batch_size
    groups = [rewards[i : i + args.num_generations] for i in range(0, len(rewards), args.num_generations)]
    assert all(max(g) > min(g) for g in groups), groups  # only informative groups were trained
    assert all(abs(a) > 0.5 for a in trainer._logs["advantages"])


def test_table_columns_stay_aligned_when_a_round_logs_no_extra_column(tiny_model_dir, tmp_path):
    """A reward that logs an extra column in its first round only: every column still has one value per row."""
    calls = {"n": 0}

    def logging_reward(completions, kind, log_extra=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            log_extra("length", [len(c) for c in completions])
        return kind_reward(completions, kind)

    args = make_config(tmp_path, max_steps=1, mask_truncated_completions=False)
    dataset = Dataset.from_dict({"prompt": [f"{i}+{i}=" for i in range(64)], "kind": [i % 4 for i in range(64)]})
    trainer = DAPOTrainer(model=tiny_model_dir, reward_funcs=logging_reward, args=args, train_dataset=dataset)
    trainer.train()
    assert calls["n"] > 1  # several rounds, only the first logged the column
    rows = len(trainer._logs["prompt"])
    assert rows == args.generation_batch_size
    assert len(trainer._logs["extra"]["length"]) == rows == len(trainer._logs["advantages"])
