"""Safe defaults: no remote code unless asked, no secrets in what a run writes, nothing pushed unless asked."""

from pathlib import Path

import huggingface_hub

from dapo_trl import DAPOConfig, DAPOTrainer
from tests.helpers import kind_dataset, kind_reward, make_config


FAKE_TOKEN = "hf_FAKEtokenForTestsOnly0123456789abcd"


def test_defaults_are_safe(tmp_path):
    args = DAPOConfig(output_dir=str(tmp_path), use_cpu=True)
    assert args.trust_remote_code is False
    assert args.push_to_hub is False


def test_run_writes_no_token_and_pushes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    calls = []
    for name in ("create_repo", "upload_folder", "upload_file", "create_commit"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, lambda *a, _name=name, **k: calls.append(_name))
    args = make_config(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, log_completions=True)
    trainer = DAPOTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset())
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    assert calls == []
    written = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert any(p.name == "README.md" for p in written)  # the model card was written
    for path in written:
        assert FAKE_TOKEN.encode() not in path.read_bytes(), path
