"""`DAPOConfig`: DAPO's defaults, and every constraint rejected at construction with a message naming the field."""

from __future__ import annotations

import dataclasses
import re

import pytest
from trl import GRPOConfig

from dapo_trl import DAPOConfig
from dapo_trl.core import LOSS_AGG_MODES, LOSS_TYPES


def make(tmp_path, **kwargs) -> DAPOConfig:
    # GRPOConfig turns bf16 on by default, which fails on CPU unless use_cpu=True.
    return DAPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)


# (field named in the error, constructor kwargs)
INVALID = [
    ("dynamic_sampling_max_oversample", {"dynamic_sampling_max_oversample": float("inf")}),
    ("dynamic_sampling_skip_zero_variance", {"dynamic_sampling_skip_zero_variance": True, "dynamic_sampling": False}),
    ("epsilon", {"epsilon": -0.1}),
    ("epsilon", {"epsilon": 1.0}),
    ("epsilon", {"epsilon": 1.5}),
    ("epsilon_high", {"epsilon_high": -0.1}),
    ("beta", {"beta": -0.01}),
    ("loss_agg_mode", {"loss_agg_mode": "token-median"}),
    ("clip_ratio_c", {"clip_ratio_c": 1.0}),
    ("clip_ratio_c", {"clip_ratio_c": 0.5}),
    ("dynamic_sampling_source", {"dynamic_sampling_source": "old_prompts"}),
    ("dynamic_sampling_round_size", {"dynamic_sampling_round_size": "huge"}),
    ("dynamic_sampling_max_oversample", {"dynamic_sampling_max_oversample": 0.5}),
    ("max_num_gen_batches", {"max_num_gen_batches": 2.5}),
    ("max_num_gen_batches", {"max_num_gen_batches": "3"}),
    ("max_num_gen_batches", {"max_num_gen_batches": True}),
    # conflicts between fields (checked by GRPOConfig, still naming the field)
    ("generation_batch_size", {"generation_batch_size": 20}),  # not a multiple of the global batch (8)
    ("steps_per_generation", {"generation_batch_size": 16, "steps_per_generation": 2}),
    ("dynamic_sampling_skip_explore", {"dynamic_sampling_skip_explore": -0.1}),
    ("dynamic_sampling_skip_explore", {"dynamic_sampling_skip_explore": 1.5}),
    (
        "dynamic_sampling_skip_zero_variance",
        {"dynamic_sampling_skip_zero_variance": True, "dynamic_sampling_source": "same_prompts"},
    ),
    ("dynamic_sampling_at_cap", {"dynamic_sampling_at_cap": "ignore"}),
    ("overlong_buffer_length", {"overlong_buffer_length": 0, "max_completion_length": 64}),
    ("overlong_buffer_length", {"overlong_buffer_length": -8, "max_completion_length": 64}),
    ("overlong_buffer_length", {"overlong_buffer_length": 64, "max_completion_length": 64}),
    ("overlong_buffer_length", {"overlong_buffer_length": 65, "max_completion_length": 64}),
    ("overlong_penalty_factor", {"overlong_penalty_factor": -1.0}),
    ("loss_type", {"loss_type": "ppo"}),
    ("importance_sampling_level", {"importance_sampling_level": "group"}),
    ("top_entropy_quantile", {"top_entropy_quantile": 1.5}),
    ("top_entropy_quantile", {"top_entropy_quantile": -0.1}),
    ("sapo_temperature_neg", {"loss_type": "sapo", "sapo_temperature_neg": 0.0}),
    # an aggregation-defined loss_type with another aggregation: both fields named
    ("loss_agg_mode", {"loss_type": "grpo", "loss_agg_mode": "token-mean"}),
    ("loss_type", {"loss_type": "luspo", "loss_agg_mode": "token-mean"}),
    ("loss_type", {"loss_type": "dr_grpo", "loss_agg_mode": "seq-mean-token-mean"}),
    ("loss_agg_mode", {"loss_type": "bnpo", "loss_agg_mode": "seq-mean-token-sum"}),
    # options a loss type would ignore
    ("clip_ratio_c", {"loss_type": "cispo", "clip_ratio_c": 3.0}),
    ("loss_type", {"loss_type": "sapo", "clip_ratio_c": 3.0}),
    ("clip_ratio_c", {"loss_type": "vespo", "clip_ratio_c": 3.0}),
    ("delta", {"loss_type": "cispo", "delta": 4.0}),
    ("sapo_temperature_pos", {"loss_type": "dapo", "sapo_temperature_pos": 2.0}),
    ("vespo_k_pos", {"loss_type": "grpo", "vespo_k_pos": 1.0}),
    ("vespo_lambda_neg", {"loss_type": "sapo", "vespo_lambda_neg": 1.0}),
    ("num_generations", {"num_generations": 1}),
]


@pytest.mark.parametrize(
    "name,kwargs", INVALID, ids=[f"{name}={list(kwargs.values())[0]!r}" for name, kwargs in INVALID]
)
def test_invalid_values_raise_naming_the_field(tmp_path, name, kwargs):
    with pytest.raises(ValueError) as excinfo:
        make(tmp_path, **kwargs)
    assert name in str(excinfo.value)


def test_defaults_are_dapos(tmp_path):
    args = make(tmp_path)
    assert args.epsilon == 0.2
    assert args.epsilon_high == 0.28
    assert args.beta == 0.0
    assert args.mask_truncated_completions is True
    assert args.loss_type == "dapo"
    assert args.dynamic_sampling is True
    assert args.loss_agg_mode == "token-mean"
    assert args.clip_ratio_c is None
    assert args.dynamic_sampling_source == "new_prompts"
    assert args.dynamic_sampling_metric is None
    assert args.dynamic_sampling_round_size == "adaptive"
    assert args.dynamic_sampling_max_oversample == 2.0
    assert args.max_num_gen_batches == 10
    assert args.dynamic_sampling_at_cap == "fill"
    assert args.overlong_buffer_length is None
    assert args.overlong_penalty_factor == 1.0


# loss_type -> the aggregation TRL gives it, when loss_agg_mode is left unset
AGGREGATION_OF = {
    "dapo": "token-mean",
    "bnpo": "token-mean",
    "cispo": "token-mean",
    "vespo": "token-mean",
    "grpo": "seq-mean-token-mean",
    "sapo": "seq-mean-token-mean",
    "luspo": "seq-mean-token-sum",
    "dr_grpo": "seq-mean-token-sum-norm",
}


@pytest.mark.parametrize("loss_type", list(AGGREGATION_OF))
def test_aggregation_follows_loss_type(tmp_path, loss_type):
    assert set(AGGREGATION_OF) == set(LOSS_TYPES)
    assert make(tmp_path, loss_type=loss_type).loss_agg_mode == AGGREGATION_OF[loss_type]


def test_explicit_loss_agg_mode_overrides(tmp_path):
    assert make(tmp_path, loss_agg_mode="seq-mean-token-sum").loss_agg_mode == "seq-mean-token-sum"
    assert make(tmp_path, loss_type="sapo", loss_agg_mode="token-mean").loss_agg_mode == "token-mean"


def test_conflict_errors_name_both_fields(tmp_path):
    with pytest.raises(ValueError, match="loss_agg_mode.*loss_type"):
        make(tmp_path, loss_type="grpo", loss_agg_mode="token-mean")
    with pytest.raises(ValueError, match="clip_ratio_c.*loss_type"):
        make(tmp_path, loss_type="cispo", clip_ratio_c=3.0)


def test_no_field_redeclared_with_trls_default():
    """A field DAPOConfig re-declares must change TRL's default (otherwise it is noise that can drift)."""
    trl_defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    for f in own_fields():
        if f.name in trl_defaults:
            assert f.default != trl_defaults[f.name], f.name


def test_epsilon_high_none_becomes_epsilon(tmp_path):
    args = make(tmp_path, epsilon=0.1, epsilon_high=None)
    assert args.epsilon_high == 0.1
    assert make(tmp_path, epsilon_high=None).epsilon_high == 0.2


VALID = [
    {"epsilon": 0.0, "epsilon_high": 0.0},
    {"epsilon": 0.3, "epsilon_high": 0.5},
    {"beta": 0.04},
    {"clip_ratio_c": 3.0},
    {"clip_ratio_c": 1.0001},
    {"dynamic_sampling": False},
    {"dynamic_sampling_source": "same_prompts"},
    {"dynamic_sampling_metric": "accuracy"},
    {"dynamic_sampling_round_size": "fixed"},
    {"dynamic_sampling_max_oversample": 1.0},
    {"dynamic_sampling_max_oversample": 4.5},
    {"max_num_gen_batches": 0},
    {"max_num_gen_batches": -1},
    {"max_num_gen_batches": 1},
    {"dynamic_sampling_skip_zero_variance": True, "dynamic_sampling_skip_explore": 0.0},
    {"scale_rewards": "batch"},  # advantages are computed after assembly, on the trained batch
    {"multi_objective_aggregation": "normalize_then_sum"},
    {"dynamic_sampling_at_cap": "raise"},
    {"overlong_buffer_length": 1, "max_completion_length": 64},
    {"overlong_buffer_length": 63, "max_completion_length": 64},
    {"overlong_buffer_length": 16, "max_completion_length": 64, "overlong_penalty_factor": 0.0},
    {"num_generations": 2, "per_device_train_batch_size": 2},
    *({"loss_agg_mode": mode} for mode in LOSS_AGG_MODES),
    *({"loss_type": loss_type} for loss_type in LOSS_TYPES),
    *(
        {"loss_type": loss_type, "loss_agg_mode": mode}
        for loss_type in ("cispo", "sapo", "vespo")
        for mode in LOSS_AGG_MODES
    ),
    {"loss_type": "grpo", "loss_agg_mode": "seq-mean-token-mean"},
    {"loss_type": "grpo", "epsilon_high": 0.28, "delta": 4.0, "clip_ratio_c": 3.0},
    {"loss_type": "luspo", "importance_sampling_level": "sequence", "clip_ratio_c": 3.0},
    {"importance_sampling_level": "sequence"},
    {"top_entropy_quantile": 0.2, "off_policy_mask_threshold": 0.5},
    {"entropy_coef": 0.01},
    {"use_adaptive_entropy": True, "entropy_target": 0.5},
    {"use_liger_kernel": True},
    {"loss_type": "sapo", "sapo_temperature_pos": 2.0, "sapo_temperature_neg": 3.0},
    {"loss_type": "vespo", "vespo_k_pos": 1.0, "vespo_lambda_neg": 1.5},
    {"loss_type": "cispo", "epsilon_high": 5.0},
]


@pytest.mark.parametrize("kwargs", VALID, ids=[repr(kwargs) for kwargs in VALID])
def test_valid_values_construct(tmp_path, kwargs):
    args = make(tmp_path, **kwargs)
    for key, value in kwargs.items():
        assert getattr(args, key) == value


def own_fields():
    """Dataclass fields declared in DAPOConfig's own body (new knobs and GRPOConfig fields it re-declares)."""
    own = set(DAPOConfig.__dict__.get("__annotations__", {}))
    return [f for f in dataclasses.fields(DAPOConfig) if f.name in own]


def test_own_fields_cover_the_dapo_knobs():
    names = {f.name for f in own_fields()}
    assert {"epsilon_high", "mask_truncated_completions", "loss_agg_mode", "clip_ratio_c"} <= names
    assert {"dynamic_sampling", "max_num_gen_batches", "overlong_buffer_length", "overlong_penalty_factor"} <= names


@pytest.mark.parametrize("field", own_fields(), ids=lambda f: f.name)
def test_own_field_has_help_and_is_documented(field):
    help_text = field.metadata.get("help")
    assert isinstance(help_text, str) and help_text.strip()
    # whole-word match: "epsilon" must not be satisfied by "epsilon_high"
    assert re.search(rf"\b{re.escape(field.name)}\b", DAPOConfig.__doc__), field.name


@pytest.mark.parametrize("field", [f for f in own_fields() if "choices" in f.metadata], ids=lambda f: f.name)
def test_choices_metadata_matches_validation(tmp_path, field):
    # Every value advertised in metadata["choices"] is accepted.
    for choice in field.metadata["choices"]:
        assert getattr(make(tmp_path, **{field.name: choice}), field.name) == choice
