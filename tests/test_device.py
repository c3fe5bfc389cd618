"""`DAPOConfig`'s device defaults: fp32 on machines without a bf16 GPU (said in one line), bf16 where there is one."""

from __future__ import annotations

import logging

import pytest

import dapo_trl.config
from dapo_trl import DAPOConfig


FP32_LINE = "dapo_trl: no CUDA GPU with bf16 found: training in fp32 on the CPU (bf16=True to insist)."


def fp32_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dapo_trl.config"]


def test_without_a_bf16_gpu_bf16_unset_means_fp32_and_one_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(dapo_trl.config, "is_torch_bf16_gpu_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="dapo_trl.config"):
        args = DAPOConfig(output_dir=str(tmp_path))  # no use_cpu, no bf16: what the README snippet does
    assert args.bf16 is False and args.device.type == "cpu"
    assert fp32_lines(caplog) == [FP32_LINE]


def test_explicit_choices_print_nothing(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(dapo_trl.config, "is_torch_bf16_gpu_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="dapo_trl.config"):
        assert DAPOConfig(output_dir=str(tmp_path), bf16=False).bf16 is False
        assert DAPOConfig(output_dir=str(tmp_path), bf16=True, use_cpu=True).bf16 is True  # insisting, on the CPU
    assert fp32_lines(caplog) == []


def test_insisting_on_bf16_without_a_gpu_names_the_field(monkeypatch, tmp_path):
    monkeypatch.setattr(dapo_trl.config, "is_torch_bf16_gpu_available", lambda: False)
    with pytest.raises(ValueError, match=r"^DAPOConfig\.bf16=True needs a bf16-capable GPU .* use_cpu=True"):
        DAPOConfig(output_dir=str(tmp_path), bf16=True)


def test_with_a_bf16_gpu_bf16_stays_trls_default(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(dapo_trl.config, "is_torch_bf16_gpu_available", lambda: True)
    with caplog.at_level(logging.WARNING, logger="dapo_trl.config"):
        args = DAPOConfig(output_dir=str(tmp_path), use_cpu=True)  # use_cpu: transformers' own GPU check passes here
    assert args.bf16 is True and fp32_lines(caplog) == []


def test_no_gradient_checkpointing_future_warning(tmp_path):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DAPOConfig(output_dir=str(tmp_path))
        warnings.warn("`gradient_checkpointing` is deprecated (the user's own)", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert messages == ["`gradient_checkpointing` is deprecated (the user's own)"]  # only TRL's call is silenced
