import os


os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from dapo_trl.testing import CHAT_TEMPLATE, build_char_tokenizer, build_tiny_model, save_tiny_model


TEXT = "What is 12+30? #### 42"


def test_tokenizer_one_token_per_char_and_round_trip():
    tokenizer = build_char_tokenizer()
    ids = tokenizer("12+3")["input_ids"]
    assert len(ids) == 4
    assert tokenizer.eos_token_id not in ids and tokenizer.pad_token_id not in ids
    ids = tokenizer(TEXT)["input_ids"]
    assert len(ids) == len(TEXT)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.decode(tokenizer("a\nb $c")["input_ids"]) == "a\nb $c"
    assert tokenizer("~")["input_ids"] == [tokenizer.unk_token_id]
    assert tokenizer.padding_side == "left"
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token) == ("<pad>", "<eos>", "<unk>")


def test_chat_template():
    tokenizer = build_char_tokenizer()
    prompt = [{"role": "user", "content": "1+1="}]
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert text == "u:1+1=\na:"
    conversation = prompt + [{"role": "assistant", "content": "2"}]
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == "u:1+1=\na:2<eos>"


def test_model_forward_and_generate():
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer)
    assert model.config.vocab_size == len(tokenizer)
    inputs = tokenizer(["1+1=", "12+30="], padding=True, return_tensors="pt")
    logits = model(**inputs).logits
    assert logits.shape == (2, inputs["input_ids"].shape[1], len(tokenizer))
    out = model.generate(**inputs, max_new_tokens=5, do_sample=True)
    assert out.shape[0] == 2 and inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 5
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_model_is_deterministic_and_keeps_global_rng():
    tokenizer = build_char_tokenizer()
    state = torch.get_rng_state()
    model_a, model_b = build_tiny_model(tokenizer, seed=3), build_tiny_model(tokenizer, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for p_a, p_b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p_a, p_b)
    model_c = build_tiny_model(tokenizer, seed=4)
    assert not torch.equal(model_a.lm_head.weight, model_c.lm_head.weight)


def test_save_and_load_round_trip(tmp_path):
    path = save_tiny_model(tmp_path / "tiny", seed=1)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=1)

    loaded_tokenizer = AutoTokenizer.from_pretrained(path)
    assert loaded_tokenizer.chat_template == CHAT_TEMPLATE
    assert loaded_tokenizer.padding_side == "left"
    assert loaded_tokenizer.pad_token_id == tokenizer.pad_token_id
    assert loaded_tokenizer.eos_token_id == tokenizer.eos_token_id
    assert loaded_tokenizer.unk_token == "<unk>"
    assert len(loaded_tokenizer) == len(tokenizer)
    assert loaded_tokenizer(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]
    assert loaded_tokenizer.decode(loaded_tokenizer(TEXT)["input_ids"]) == TEXT

    loaded_model = AutoModelForCausalLM.from_pretrained(path)
    inputs = tokenizer(["1+1=", "12+30="], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded_model(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
    assert loaded_model.generation_config.eos_token_id == tokenizer.eos_token_id


def test_grpo_trainer_one_step(tmp_path):
    model_id = save_tiny_model(tmp_path / "tiny")
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": f"{i}+1="}] for i in range(4)]})

    def reward_len(completions, **kwargs):
        return [float(len(completion[0]["content"])) for completion in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=1,
        report_to="none",
        use_cpu=True,
    )
    trainer = GRPOTrainer(model=model_id, reward_funcs=reward_len, args=args, train_dataset=dataset)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 1
    changed = any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert changed


def test_tiny_moe_model_saves_and_reloads(tmp_path):
    path = save_tiny_model(tmp_path / "moe", moe=True)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(model).__name__ == "Qwen3MoeForCausalLM"
    assert model.config.num_experts == 4 and model.config.router_aux_loss_coef == 0.01
    ids = torch.tensor([[4, 5, 6, 7]])
    out = model(input_ids=ids, output_router_logits=True, labels=ids)
    assert torch.isfinite(out.aux_loss) and out.aux_loss > 0
