"""Save a DAPO-trained model (LoRA adapter or full weights) with a model card, and push it to the Hugging Face Hub.

```python
from dapo_trl.hub import push_folder, save_for_hub

trainer.train()
save_for_hub(trainer, "outputs/hub", base_model="Qwen/Qwen2.5-0.5B-Instruct", dataset_name="openai/gsm8k",
             metrics={"gsm8k_accuracy_before": 0.31, "gsm8k_accuracy_after": 0.47})
push_folder("outputs/hub", "me/qwen2.5-0.5b-gsm8k-dapo")  # token: `hf auth login`, HF_TOKEN or token=...
```

`save_for_hub` writes only what belongs on the Hub: the weights (for a PEFT model only the adapter), the tokenizer and
a `README.md` model card. `push_folder` uploads exactly that folder. Nothing here reads a token: the card is built from
the training configuration and the values passed in, and `training_args.bin` (a pickle of the whole config, which
can hold `hub_token`) is removed from the folder.
"""

from __future__ import annotations

import json
import numbers
import os
import warnings
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version


__all__ = ["DAPO_PAPER", "model_card", "push_folder", "save_for_hub"]

# The paper DAPOTrainer cites (its `_paper`, used by TRL's model card too); the fallback for other trainers here.
DAPO_PAPER = {
    "title": "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
    "id": "2503.14476",
    "citation": (
        "@article{yu2025dapo,\n"
        "    title   = {{DAPO: An Open-Source LLM Reinforcement Learning System at Scale}},\n"
        "    author  = {Qiying Yu and others},\n"
        "    year    = 2025,\n"
        "    journal = {arXiv preprint arXiv:2503.14476}\n"
        "}"
    ),
}
_TRL_CITATION = (
    "@software{vonwerra2020trl,\n"
    "    title   = {{TRL: Transformers Reinforcement Learning}},\n"
    "    author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, "
    "Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallou\u00e9dec, Quentin},\n"
    "    license = {Apache-2.0},\n"
    "    url     = {https://github.com/huggingface/trl},\n"
    "    year    = {2020}\n"
    "}"
)
_BASE_TAGS = ("dapo", "trl", "dapo-trl", "reinforcement-learning")
_TRAINING_ARGS_FILE = "training_args.bin"
_REPO_PLACEHOLDER = "path/or/repo-id/of/this/model"


# ---------------------------------------------------------------------------------------------------- model card


def model_card(
    trainer,
    *,
    base_model: str,
    dataset_name: str | list[str] | None,
    metrics: dict | None = None,
    extra: str | None = None,
    repo_id: str | None = None,
) -> str:
    """
    Hugging Face model card (`README.md` text) for a model trained with a [`DAPOTrainer`].

    The YAML front matter has `base_model`, `library_name` (`peft` for a LoRA/PEFT model, `transformers` otherwise),
    `tags`, `datasets` and `pipeline_tag: text-generation`. The body names DAPO and its paper (arXiv 2503.14476), the
    base model and dataset, the DAPO settings of `trainer.args` (clip range, loss aggregation, dynamic sampling and
    its knobs, overlong filtering / soft punishment, group size, learning rate, steps, rewards, LoRA settings), the
    `metrics` given, a usage snippet and the citations.

    Only `trainer.args`, `trainer.state`, the model's PEFT config and the arguments are read: no token, environment
    variable or local path other than `base_model` ends up in the card.

    Args:
        trainer: The (trained) `DAPOTrainer` (any TRL/transformers `Trainer` works; DAPO fields missing from its
            `args` are left out).
        base_model (`str`): Hub id of the model training started from, e.g. `Qwen/Qwen2.5-0.5B-Instruct`. A local
            directory is named in the body but left out of the metadata (the Hub accepts only repo ids there).
        dataset_name (`str`, `list[str]` or `None`): Hub id(s) of the training dataset(s), e.g. `openai/gsm8k`.
        metrics (`dict`, *optional*): Final metrics to report, e.g. `{"gsm8k_accuracy_before": 0.31, ...}`.
        extra (`str`, *optional*): Markdown appended as an "Additional information" section.
        repo_id (`str`, *optional*): Hub id the model is pushed to, used in the usage snippet (defaults to
            `trainer.args.hub_model_id`, else a placeholder).
    """
    from huggingface_hub import ModelCardData

    model = _unwrap(trainer)
    peft_config = _peft_config(model)
    args = trainer.args
    name = getattr(trainer, "_name", None) or "DAPO"
    paper = getattr(trainer, "_paper", None) or DAPO_PAPER
    paper_id = paper.get("id", DAPO_PAPER["id"])
    datasets = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name or [])
    repo = repo_id or getattr(args, "hub_model_id", None) or _REPO_PLACEHOLDER
    library = "peft" if peft_config is not None else "transformers"
    if repo != _REPO_PLACEHOLDER:
        title = repo.rstrip("/").split("/")[-1]
    else:
        title = f"{os.path.basename(os.path.normpath(base_model))} trained with {name}"

    tags = list(_BASE_TAGS)
    for tag in [*(getattr(trainer, "_tag_names", None) or []), *(["lora", "peft"] if peft_config else [])]:
        if tag not in tags:
            tags.append(tag)
    card_data = ModelCardData(
        base_model=None if os.path.isdir(base_model) else base_model,
        datasets=datasets or None,
        library_name=library,
        pipeline_tag="text-generation",
        tags=tags,
    )

    kind = "a LoRA adapter" if peft_config is not None else "a fine-tuned version"
    base_link = base_model if os.path.isdir(base_model) else f"[{base_model}](https://huggingface.co/{base_model})"
    data_text = " on " + ", ".join(f"[{d}](https://huggingface.co/datasets/{d})" for d in datasets) if datasets else ""
    lines = [
        "---",
        card_data.to_yaml(),
        "---",
        "",
        f"# {title}",
        "",
        f"This model is {kind} of {base_link}, trained with reinforcement learning{data_text} using **{name}** "
        f"(Decoupled Clip and Dynamic sAmpling Policy Optimization), the method of "
        f"[{paper.get('title', DAPO_PAPER['title'])}](https://huggingface.co/papers/{paper_id}) "
        f"([arXiv:{paper_id}](https://arxiv.org/abs/{paper_id})), "
        "with dapo-trl, a DAPO trainer on top of [TRL](https://github.com/huggingface/trl).",
        "",
        f"- **Base model:** {base_link}",
        f"- **Dataset:** {', '.join(datasets) if datasets else 'not specified'}",
        f"- **Weights:** {'LoRA adapter only (load it on top of the base model)' if peft_config else 'full model'}",
        "",
    ]
    if metrics:
        lines += ["## Results", "", "| Metric | Value |", "| --- | --- |"]
        lines += [f"| {_cell(key)} | {_cell(_fmt(value))} |" for key, value in metrics.items()]
        lines.append("")
    lines += ["## Usage", "", "```python", _usage(base_model, repo, peft_config is not None, trainer), "```", ""]
    lines += [
        "## Training procedure",
        "",
        f"Trained with {name} ([arXiv:{paper_id}](https://arxiv.org/abs/{paper_id})).",
        "",
    ]
    lines += _settings_section("DAPO settings", _dapo_settings(args))
    lines += _settings_section("Training", _training_settings(trainer))
    if peft_config is not None:
        lines += _settings_section("LoRA / PEFT", _peft_settings(peft_config))
    lines += ["### Framework versions", ""]
    lines += [f"- {label}: {_version(package)}" for label, package in _VERSIONED]
    lines.append("")
    if extra:
        lines += ["## Additional information", "", extra.strip(), ""]
    lines += [
        "## Citations",
        "",
        f"Cite {name} as:",
        "",
        "```bibtex",
        paper.get("citation", DAPO_PAPER["citation"]),
        "```",
    ]
    lines += ["", "Cite TRL as:", "", "```bibtex", _TRL_CITATION, "```", ""]
    return "\n".join(lines)


_VERSIONED = [
    ("dapo-trl", "dapo-trl"),
    ("TRL", "trl"),
    ("Transformers", "transformers"),
    ("PEFT", "peft"),
    ("PyTorch", "torch"),
    ("Datasets", "datasets"),
    ("Tokenizers", "tokenizers"),
]


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return ", ".join(_fmt(item) for item in items)
    return str(value)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _settings_section(title: str, rows: list[tuple[str, object]]) -> list[str]:
    if not rows:
        return []
    lines = [f"### {title}", "", "| Setting | Value |", "| --- | --- |"]
    lines += [f"| {_cell(key)} | {_cell(_fmt(value))} |" for key, value in rows]
    return [*lines, ""]


def _get(args, *names) -> list[tuple[str, object]]:
    return [(name, getattr(args, name)) for name in names if hasattr(args, name)]


def _dapo_settings(args) -> list[tuple[str, object]]:
    rows = _get(args, "epsilon", "epsilon_high", "loss_agg_mode", "clip_ratio_c", "beta")
    rows += _get(args, "dynamic_sampling")
    if getattr(args, "dynamic_sampling", False):
        rows += _get(
            args,
            "dynamic_sampling_source",
            "dynamic_sampling_metric",
            "dynamic_sampling_round_size",
            "dynamic_sampling_max_oversample",
            "dynamic_sampling_skip_zero_variance",
        )
        if getattr(args, "dynamic_sampling_skip_zero_variance", False):
            rows += _get(args, "dynamic_sampling_skip_explore")
        rows += _get(args, "max_num_gen_batches", "dynamic_sampling_at_cap")
    rows += [
        (f"{name} (overlong filtering)" if name == "mask_truncated_completions" else name, value)
        for name, value in _get(args, "mask_truncated_completions")
    ]
    if hasattr(args, "overlong_buffer_length"):
        if args.overlong_buffer_length is None:
            rows.append(("soft overlong punishment", "off"))
        else:
            rows += _get(args, "overlong_buffer_length", "overlong_penalty_factor")
    rows += _get(args, "max_completion_length")
    return [(name, "None" if value is None else value) for name, value in rows]


def _training_settings(trainer) -> list[tuple[str, object]]:
    args = trainer.args
    rows = _get(
        args,
        "num_generations",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "steps_per_generation",
        "num_iterations",
        "temperature",
        "learning_rate",
        "lr_scheduler_type",
        "max_steps",
    )
    rows = [(name, getattr(value, "value", value)) for name, value in rows]  # enums (lr_scheduler_type)
    state = getattr(trainer, "state", None)
    if state is not None:
        rows.append(("optimizer steps trained", state.global_step))
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None:
        rows.append(("processes", accelerator.num_processes))
    names = getattr(trainer, "reward_func_names", None)
    if names:
        weights = getattr(trainer, "reward_weights", None)
        weights = weights.tolist() if weights is not None else [1.0] * len(names)
        rows.append(("reward functions (weight)", [f"{n} ({_fmt(w)})" for n, w in zip(names, weights)]))
    return rows


def _peft_settings(config) -> list[tuple[str, object]]:
    rows = [("peft_type", getattr(getattr(config, "peft_type", None), "value", getattr(config, "peft_type", None)))]
    rows += _get(config, "r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "bias", "use_rslora")
    return [(name, value) for name, value in rows if value is not None]


def _usage(base_model: str, repo: str, is_peft: bool, trainer) -> str:
    tokenizer = getattr(trainer, "processing_class", None)
    chat = getattr(tokenizer, "chat_template", None) is not None
    lines = ["from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if is_peft:
        lines = [
            "from peft import PeftModel",
            *lines,
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{base_model}")',
            f'model = PeftModel.from_pretrained(base, "{repo}")',
            "model = model.merge_and_unload()  # optional: a plain transformers model, faster to run",
        ]
    else:
        lines += ["", f'model = AutoModelForCausalLM.from_pretrained("{repo}")']
    lines.append(f'tokenizer = AutoTokenizer.from_pretrained("{repo}")')
    lines.append("")
    if chat:
        lines += [
            'messages = [{"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. How many '
            'clips did she sell in total?"}]',
            "inputs = tokenizer.apply_chat_template(",
            '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True',
            ")",
        ]
    else:
        lines.append('inputs = tokenizer("1+2=", return_tensors="pt")')
    lines += [
        "output = model.generate(**inputs, max_new_tokens=256)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- saving


def save_for_hub(
    trainer,
    output_dir: str | os.PathLike,
    *,
    base_model: str,
    dataset_name: str | list[str] | None,
    metrics: dict | None = None,
    extra: str | None = None,
    repo_id: str | None = None,
) -> list[str]:
    """
    Write a Hub-ready folder: the model, the tokenizer and the model card.

    - the model with `trainer.save_model(output_dir)`: for a PEFT model only the adapter (`adapter_config.json` and
      `adapter_model.safetensors`, whose `base_model_name_or_path` is set to `base_model`), otherwise the full
      weights (`model.safetensors` and config); works under DeepSpeed / FSDP, so call it on every process;
    - the tokenizer / processor (`trainer.processing_class.save_pretrained`);
    - `README.md` from [`model_card`].

    `training_args.bin`, which `save_model` also writes, is removed: it is a pickle of the whole config (it can hold
    `hub_token`) and is not needed to use the model. `save_model` does not push here even if `args.push_to_hub` is
    set: use [`push_folder`]. Use a dedicated folder: [`push_folder`] uploads everything in it (files left over from
    an earlier save are reported with a warning).

    Returns:
        `list[str]`: the (sorted, folder-relative) names of the files this call wrote; empty on processes other than
        the main one.
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    before = _snapshot(output_dir)
    # `_internal_call=True`: the user-facing save_model would also push args.output_dir when args.push_to_hub is set.
    trainer.save_model(output_dir, _internal_call=True)
    if trainer.is_world_process_zero():
        args_file = os.path.join(output_dir, _TRAINING_ARGS_FILE)
        if os.path.exists(args_file):
            os.remove(args_file)
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(output_dir)
        model = _unwrap(trainer)
        if _peft_config(model) is not None:
            _point_adapter_at(output_dir, base_model)
        card = model_card(
            trainer, base_model=base_model, dataset_name=dataset_name, metrics=metrics, extra=extra, repo_id=repo_id
        )
        with open(os.path.join(output_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return []
    after = _snapshot(output_dir)
    written = sorted(name for name, stat in after.items() if before.get(name) != stat)
    stale = sorted(name for name in after if name not in written)
    if stale:
        warnings.warn(
            f"{output_dir} also holds files this save did not write, which push_folder would upload too: "
            f"{', '.join(stale[:10])}{' ...' if len(stale) > 10 else ''}. Save into an empty folder.",
            stacklevel=2,
        )
    return written


def _snapshot(folder: str) -> dict[str, tuple[int, int, int]]:
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            stat = os.stat(path)
            files[os.path.relpath(path, folder).replace(os.sep, "/")] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return files


def _unwrap(trainer):
    accelerator = getattr(trainer, "accelerator", None)
    return accelerator.unwrap_model(trainer.model) if accelerator is not None else trainer.model


def _peft_config(model):
    """The active adapter's config of a `PeftModel`, else `None`."""
    try:
        from peft import PeftModel
    except ImportError:
        return None
    if not isinstance(model, PeftModel):
        return None
    return model.peft_config[model.active_adapter]


def _point_adapter_at(output_dir: str, base_model: str) -> None:
    """Make `adapter_config.json` name the Hub base model (peft writes the path training loaded it from)."""
    path = os.path.join(output_dir, "adapter_config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("base_model_name_or_path") != base_model:
        config["base_model_name_or_path"] = base_model
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)


# ------------------------------------------------------------------------------------------------------- pushing


def push_folder(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload model trained with DAPO (dapo-trl)",
    endpoint: str | None = None,
) -> str:
    """
    Create the model repo `repo_id` (if it does not exist) and upload the folder `output_dir` to it in one commit.

    Args:
        output_dir: Folder to upload, e.g. the one written by [`save_for_hub`]. Every file in it is uploaded.
        repo_id (`str`): `namespace/name` of the model repo.
        private (`bool`, *optional*): Visibility of a newly created repo (`None`: the namespace's default).
        token (`str`, *optional*): Hub token; by default huggingface_hub's own lookup (`HF_TOKEN`, `hf auth login`).
            It is only ever sent in the `Authorization` header.
        commit_message (`str`): Message of the commit.
        endpoint (`str`, *optional*): Hub URL; defaults to the `HF_ENDPOINT` environment variable read at call
            time (also when set after `huggingface_hub` was imported), else huggingface_hub's default. Every request
            of the push goes there (huggingface_hub's module-level endpoint is pointed at it during the call).

    Returns:
        `str`: URL of the commit.
    """
    from huggingface_hub import HfApi

    from . import __version__

    folder = os.fspath(output_dir)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a directory: write it with save_for_hub first.")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    api = HfApi(endpoint=endpoint, token=token, library_name="dapo-trl", library_version=__version__)
    with _default_endpoint(api.endpoint):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message, repo_type="model"
        )
    return str(commit.commit_url)


@contextmanager
def _default_endpoint(endpoint: str):
    """
    Point `huggingface_hub.constants.ENDPOINT` at `endpoint` while the block runs.

    `HfApi(endpoint=...)` covers the API calls, but huggingface_hub reads the module-level endpoint (fixed when it was
    imported, from `HF_ENDPOINT`) for side requests, e.g. the agent-harness registry it fetches while building the
    user agent of the first request. Without this, a push to a custom endpoint would also contact huggingface.co.
    Not thread-safe: another thread using huggingface_hub meanwhile sees the same endpoint.
    """
    from huggingface_hub import constants

    previous = constants.ENDPOINT
    constants.ENDPOINT = endpoint
    try:
        yield
    finally:
        constants.ENDPOINT = previous
