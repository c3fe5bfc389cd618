"""`dapo_trl.hub`: LoRA / full-weight folders with a model card, reloaded, and pushed to a local fake Hub."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo_trl import DAPOTrainer
from dapo_trl.hub import push_folder, save_for_hub

from .fake_hub import FakeHub, only_loopback
from .helpers import kind_dataset, kind_reward, load_recipe, make_config


FAKE_TOKEN = "hf_fakeTokenForDapoTrlTests0123456789"
BASE_ID = "dapo-trl-tests/tiny-qwen2"
DATASET = "dapo-trl-tests/kind-prompts"
REPO_ID = "someone/tiny-dapo-lora"
METRICS = {"heldout_accuracy_before": 0.125, "heldout_accuracy_after": 0.4375}
WEIGHT_FILES = {
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
}


def folder_files(folder) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder).replace(os.sep, "/")] = f.read()
    return files


def front_matter(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    header, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("3+4=7\n12+5=", return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """The tiny model trained 2 steps with LoRA (hub_token set in the config), saved with save_for_hub."""
    tmp = tmp_path_factory.mktemp("hub-lora")
    args = make_config(tmp / "out", max_steps=2, hub_token=FAKE_TOKEN)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = DAPOTrainer(
        model=tiny_model_dir,
        reward_funcs=kind_reward,
        args=args,
        train_dataset=kind_dataset(),
        peft_config=peft_config,
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    folder = tmp / "hub"
    written = save_for_hub(trainer, folder, base_model=BASE_ID, dataset_name=DATASET, metrics=METRICS, repo_id=REPO_ID)
    return SimpleNamespace(trainer=trainer, before=before, folder=folder, written=written)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A running FakeHub, huggingface_hub allowed online (conftest sets offline mode), and only loopback reachable."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub fetches (once per process, cached a day on disk) an "agent harness" registry while building its
    # user agent: start from a clean state so that this request happens, and keep the cache out of the user's HF_HOME.
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"), raising=False)
    try:
        from huggingface_hub.utils import _detect_agent

        monkeypatch.setattr(_detect_agent, "_registry", None)
    except ImportError:  # older huggingface_hub: no such request
        pass
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    # upload_folder opens an hf_xet session (unused here: every file is "regular"), which writes logs under its cache.
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet"))
    with FakeHub(lifetime=60) as hub, only_loopback() as refused:
        hub.refused = refused
        # As if the process had started with HF_ENDPOINT=<fake>: huggingface_hub's own side requests (its agent
        # registry) follow that global setting, which push_folder leaves alone.
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        yield hub
    assert not hub.running


# ---------------------------------------------------------------------------------------------------- LoRA folder


def test_lora_training_changes_only_adapter_parameters(lora_run):
    params = dict(lora_run.trainer.model.named_parameters())
    changed = {name for name, p in lora_run.before.items() if not torch.equal(params[name], p)}
    assert changed, "LoRA training changed nothing"
    assert all("lora_" in name for name in changed)
    assert all(params[name].requires_grad for name in changed)


def test_save_for_hub_writes_adapter_tokenizer_and_card_only(lora_run):
    files = folder_files(lora_run.folder)
    assert lora_run.written == sorted(files)
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "README.md"} <= set(files)
    assert "tokenizer.json" in files
    assert not WEIGHT_FILES & set(files), "a LoRA folder must not hold full weights"
    assert "training_args.bin" not in files  # a pickle of the config: it can hold hub_token
    adapter = json.loads(files["adapter_config.json"])
    assert adapter["base_model_name_or_path"] == BASE_ID  # not the local path training loaded the model from
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert not any(FAKE_TOKEN.encode() in content for content in files.values())
    tokenizer = AutoTokenizer.from_pretrained(lora_run.folder)
    assert tokenizer.decode(tokenizer("12+5=17")["input_ids"]) == "12+5=17"


def test_lora_card_metadata_and_body(lora_run):
    card = (lora_run.folder / "README.md").read_text(encoding="utf-8")
    metadata, body = front_matter(card)
    assert metadata["base_model"] == BASE_ID
    assert metadata["library_name"] == "peft"
    assert metadata["pipeline_tag"] == "text-generation"
    assert metadata["datasets"] == [DATASET]
    assert {"dapo", "trl", "dapo-trl", "lora"} <= set(metadata["tags"])
    for text in [
        "DAPO",
        "2503.14476",
        "https://arxiv.org/abs/2503.14476",
        "@article{yu2025dapo",
        BASE_ID,
        DATASET,
        "| heldout_accuracy_before | 0.125 |",
        "| heldout_accuracy_after | 0.4375 |",
        "| epsilon | 0.2 |",
        "| epsilon_high | 0.28 |",
        "| loss_agg_mode | token-mean |",
        "| dynamic_sampling | True |",
        "| dynamic_sampling_source | new_prompts |",
        "| max_num_gen_batches | 10 |",
        "| mask_truncated_completions (overlong filtering) | True |",
        "| soft overlong punishment | off |",
        "| num_generations | 4 |",
        "| learning_rate | 0.001 |",
        "| optimizer steps trained | 2 |",
        "| reward functions (weight) | kind_reward (1) |",
        "| r | 4 |",
        "| target_modules | q_proj, v_proj |",
        f'PeftModel.from_pretrained(base, "{REPO_ID}")',
        f'AutoModelForCausalLM.from_pretrained("{BASE_ID}")',
    ]:
        assert text in body, text
    assert FAKE_TOKEN not in card
    assert str(lora_run.trainer.args.output_dir) not in card


def test_reloaded_adapter_gives_the_trained_logits(lora_run, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(lora_run.folder)
    trained = logits(lora_run.trainer.model, tokenizer)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    untouched = logits(base, tokenizer)
    reloaded = PeftModel.from_pretrained(base, lora_run.folder)
    assert torch.allclose(logits(reloaded, tokenizer), trained, atol=1e-6)
    assert not torch.allclose(untouched, trained, atol=1e-4), "the adapter should change the logits"


def test_save_for_hub_warns_about_files_it_did_not_write(lora_run, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"stale full weights")
    with pytest.warns(UserWarning, match="model.safetensors"):
        written = save_for_hub(lora_run.trainer, tmp_path, base_model=BASE_ID, dataset_name=DATASET)
    assert "model.safetensors" not in written and "adapter_model.safetensors" in written


def test_card_leaves_local_base_model_and_missing_dataset_out_of_metadata(lora_run, tiny_model_dir):
    trainer = lora_run.trainer
    trainer.create_model_card(base_model=tiny_model_dir, dataset_name=None, extra="Trained in a test.")
    metadata, body = front_matter((Path(trainer.args.output_dir) / "README.md").read_text(encoding="utf-8"))
    assert "base_model" not in metadata and "datasets" not in metadata  # the Hub accepts only repo ids there
    assert metadata["library_name"] == "peft"
    assert "## Results" not in body and "## Additional information\n\nTrained in a test." in body
    assert "None" not in body.split("## Training procedure")[0]  # TRL's template would say "version of [None]"


def test_card_is_trls_template_completed(lora_run, tmp_path):
    """One card: TRL's template (its sections, citation, tags) with DAPO's additions, the same in output_dir."""
    save_for_hub(
        lora_run.trainer, tmp_path, base_model=BASE_ID, dataset_name=DATASET, metrics=METRICS, repo_id=REPO_ID
    )
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert card == (Path(lora_run.trainer.args.output_dir) / "README.md").read_text(encoding="utf-8")
    assert card == (lora_run.folder / "README.md").read_text(encoding="utf-8")  # the same document every time
    metadata, body = front_matter(card)
    assert "generated_from_trainer" in metadata["tags"]  # TRL's generate_model_card
    assert body.index("## Results") < body.index("## Quick start") < body.index("## Training procedure")
    assert body.index("### DAPO settings") < body.index("### Framework versions") < body.index("## Citations")
    assert "This model was trained with DAPO, a method introduced in" in body  # TRL's sentence, from _name/_paper
    for line in ["- TRL: ", "- Transformers: ", "- dapo-trl: ", "- PEFT: "]:
        assert line in body, line
    assert "Cite DAPO as:" in body and "Cite TRL as:" in body


def test_checkpoint_card_is_the_dapo_card(tiny_model_dir, tmp_path):
    """TRL writes output_dir/README.md at every checkpoint: it is DAPOTrainer's card, not TRL's bare one."""
    args = make_config(tmp_path / "out", max_steps=1, save_strategy="steps", save_steps=1, save_only_model=True)
    DAPOTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset()).train()
    metadata, body = front_matter((tmp_path / "out" / "README.md").read_text(encoding="utf-8"))
    assert {"dapo", "dapo-trl", "generated_from_trainer"} <= set(metadata["tags"])
    assert "### DAPO settings" in body and "| epsilon_high | 0.28 |" in body
    assert "| optimizer steps trained | 1 |" in body
    assert "[None]" not in body and 'model="None"' not in body


# ------------------------------------------------------------------------------------------------------ pushing


def test_push_folder_uploads_exactly_the_folder(lora_run, fake_hub, monkeypatch):
    from huggingface_hub import constants

    url = push_folder(lora_run.folder, REPO_ID, private=True, token=FAKE_TOKEN, commit_message="DAPO LoRA")
    assert constants.ENDPOINT == fake_hub.endpoint and constants.HF_HUB_OFFLINE is False

    assert fake_hub.refused == []  # nothing was sent anywhere else
    requests = fake_hub.requests
    calls = [(r.method, r.path) for r in requests if r.path != "/api/agent-harnesses"]
    assert calls == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", f"/api/models/{REPO_ID}/preupload/main"),
        ("POST", f"/api/models/{REPO_ID}/commit/main"),
    ]
    if not constants.HF_HUB_DISABLE_TELEMETRY:  # its agent-registry lookup went to the fake too, not huggingface.co
        assert (requests[0].method, requests[0].path) == ("GET", "/api/agent-harnesses")
    create = next(r for r in requests if r.path == "/api/repos/create")
    assert create.json() == {
        "name": "tiny-dapo-lora",
        "organization": "someone",
        "visibility": "private",
        "type": "model",
    }

    on_disk = folder_files(lora_run.folder)
    preupload = next(r for r in requests if r.path.endswith("/preupload/main")).json()
    assert sorted(f["path"] for f in preupload["files"]) == sorted(on_disk)
    [commit] = fake_hub.commits
    assert url == commit.url and url.startswith(fake_hub.endpoint)
    assert commit.header["summary"] == "DAPO LoRA"
    assert [op["key"] for op in commit.operations] == ["file"] * len(on_disk)
    assert commit.files() == on_disk  # names and contents, base64-decoded
    assert commit.files()["README.md"] == (lora_run.folder / "README.md").read_bytes()
    assert commit.files()["adapter_config.json"] == (lora_run.folder / "adapter_config.json").read_bytes()
    assert fake_hub.repo_files(REPO_ID) == on_disk

    for request in requests:
        assert request.authorization == f"Bearer {FAKE_TOKEN}" or request.path == "/api/agent-harnesses"
        assert FAKE_TOKEN.encode() not in request.body
        assert not any(FAKE_TOKEN in value for value in request.headers.values())
        assert FAKE_TOKEN not in request.path and FAKE_TOKEN not in json.dumps(request.query)
    assert not any(FAKE_TOKEN.encode() in content for content in commit.files().values())


def test_push_again_commits_only_changed_files(lora_run, fake_hub, tmp_path):
    folder = Path(shutil.copytree(lora_run.folder, tmp_path / "hub"))
    push_folder(folder, REPO_ID, token=FAKE_TOKEN, endpoint=fake_hub.endpoint)
    with open(folder / "README.md", "a", encoding="utf-8") as f:
        f.write("\nUpdated after a longer run.\n")
    url = push_folder(folder, REPO_ID, token=FAKE_TOKEN, endpoint=fake_hub.endpoint)

    assert fake_hub.refused == []
    creates = [r for r in fake_hub.requests if r.path == "/api/repos/create"]
    assert len(creates) == 2  # the second answered 409 "already exists", which exist_ok accepts
    first, second = fake_hub.commits
    assert set(first.files()) == set(folder_files(folder))
    assert set(second.files()) == {"README.md"} and url == second.url
    assert fake_hub.repo_files(REPO_ID) == folder_files(folder)


def test_push_folder_refuses_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        push_folder(tmp_path / "missing", REPO_ID, token=FAKE_TOKEN, endpoint="http://127.0.0.1:9")


def test_fake_hub_records_unknown_routes_and_stops_by_itself():
    import urllib.error
    import urllib.request

    hub = FakeHub(lifetime=0.5).start()
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{hub.endpoint}/api/models/someone/x/revision/main", timeout=5)
    assert error.value.code == 404
    assert [(r.method, r.path) for r in hub.requests] == [("GET", "/api/models/someone/x/revision/main")]
    deadline = time.monotonic() + 5
    while hub.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not hub.running


# ------------------------------------------------------------------------------------------------- full weights


def test_full_weight_model_is_saved_whole_with_a_transformers_card(tiny_model_dir, tmp_path):
    trainer = DAPOTrainer(
        model=tiny_model_dir,
        reward_funcs=kind_reward,
        args=make_config(tmp_path / "out", max_steps=1),
        train_dataset=kind_dataset(),
    )
    trainer.train()
    folder = tmp_path / "hub"
    written = save_for_hub(trainer, folder, base_model=BASE_ID, dataset_name=DATASET, metrics={"reward": 0.5})
    assert {"model.safetensors", "config.json", "tokenizer_config.json", "README.md"} <= set(written)
    assert "adapter_config.json" not in written and "training_args.bin" not in written
    metadata, body = front_matter((folder / "README.md").read_text(encoding="utf-8"))
    assert metadata["library_name"] == "transformers" and metadata["base_model"] == BASE_ID
    assert "lora" not in metadata["tags"] and "PeftModel" not in body
    assert "| optimizer steps trained | 1 |" in body and "| reward | 0.5 |" in body
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    assert torch.allclose(logits(reloaded, tokenizer), logits(trainer.model, tokenizer), atol=1e-6)


def test_recipe_trains_lora_and_pushes_adapter_with_card(fake_hub, monkeypatch, tmp_path):
    """`recipes/gsm8k.py --use_peft ... --push_to_hub`: the pushed commit is exactly the adapter folder it saved."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    # TRL pings huggingface.co (telemetry) when a trainer starts online; that is TRL's, not a push.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    run = tmp_path / "run"
    load_recipe().main(
        [
            "--preset", "tiny", "--output_dir", str(run), "--sft_steps", "2", "--max_steps", "2",
            "--num_train_problems", "64", "--num_eval_problems", "8", "--max_completion_length", "16",
            "--disable_tqdm", "true", "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
            "--lora_target_modules", "q_proj", "v_proj",
            "--push_to_hub", "true", "--hub_model_id", REPO_ID, "--hub_token", FAKE_TOKEN,
        ]
    )  # fmt: skip
    assert fake_hub.refused == []
    [commit] = fake_hub.commits
    files = commit.files()
    assert set(files) == {p.name for p in (run / "final").iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    card = files["README.md"].decode()
    assert "DAPO" in card and "2503.14476" in card and "held-out greedy accuracy after RL" in card
    assert all(FAKE_TOKEN.encode() not in content for content in files.values())


def test_tiny_demo_touches_no_network_even_online(monkeypatch, tmp_path):
    """The README's first command: with offline mode NOT set, the tiny preset still sends nothing anywhere."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("CI", raising=False)  # TRL skips its telemetry ping under CI: make sure it would try here
    with only_loopback() as refused:
        load_recipe().main(
            [
                "--preset", "tiny", "--output_dir", str(tmp_path), "--sft_steps", "2", "--max_steps", "1",
                "--num_train_problems", "64", "--num_eval_problems", "4", "--max_completion_length", "16",
                "--disable_tqdm", "true",
            ]
        )  # fmt: skip
        time.sleep(0.5)  # give a telemetry thread, if any, the time to try
    assert refused == []
