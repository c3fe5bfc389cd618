"""DAPO's additions to the model card TRL writes (`trl.trainer.utils.generate_model_card`, TRL's template).

[`DAPOTrainer.create_model_card`] calls TRL's `create_model_card` (title, the trainer and paper sentence, tracker
badges, framework versions, the DAPO and TRL citations, `generated_from_trainer` and the trainer's tags) and passes
its text through [`complete_card`], which adds what TRL's template has no place for: the base model and dataset when
training started from a local folder, a usage snippet that also covers LoRA adapters, the results, the DAPO settings,
the training and LoRA settings, and the dapo-trl and PEFT versions. Checkpoints, `trainer.push_to_hub()` and
`dapo_trl.hub.save_for_hub` all write this one document.
"""

from __future__ import annotations

import numbers
import os
import re
from importlib.metadata import PackageNotFoundError, version


__all__ = ["DAPO_PAPER", "complete_card"]

# The paper DAPOTrainer cites (its `_paper`, read by TRL's card machinery).
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
REPO_PLACEHOLDER = "path/or/repo-id/of/this/model"


def complete_card(
    text: str,
    trainer,
    *,
    base_model: str | None,
    dataset_name: str | list[str] | None,
    metrics: dict | None = None,
    extra: str | None = None,
    repo_id: str | None = None,
) -> str:
    """
    TRL's model card `text` for `trainer`, completed with DAPO's sections (see the module docstring).

    `base_model` / `dataset_name`: Hub ids go into the YAML metadata; a local folder is named in the body only (the
    Hub accepts repo ids only there). Only `trainer.args`, `trainer.state`, the model's PEFT config and the arguments
    are read: no token or environment variable ends up in the card.
    """
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    peft_config = _peft_config(trainer)
    datasets = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name or [])
    if base_model and not os.path.isdir(base_model):
        card.data.base_model = base_model
    if datasets:
        card.data.datasets = datasets
    card.data.library_name = "peft" if peft_config is not None else "transformers"
    card.data.pipeline_tag = "text-generation"
    card.data.tags = sorted(set(card.data.tags or []))  # TRL builds them from a set: a stable order
    repo = repo_id or getattr(trainer.args, "hub_model_id", None) or REPO_PLACEHOLDER
    sections = _split(card.text)
    sections[0] = _intro(sections[0], base_model, datasets, peft_config is not None, trainer)
    usage = _usage(base_model or REPO_PLACEHOLDER, repo, peft_config is not None, trainer)
    quick_start = "## Quick start\n\n```python\n" + usage + "\n```\n\n"
    results = _table_section("## Results", "Metric", list((metrics or {}).items()))
    sections = _replace(sections, "## Quick start", results + quick_start)
    sections = [_training(s, trainer, peft_config) if s.startswith("## Training procedure") else s for s in sections]
    if extra:
        sections = _insert_before(sections, "## Citations", f"## Additional information\n\n{extra.strip()}\n\n")
    card.text = re.sub(r"\n([ \t]*\n){2,}", "\n\n", "".join(sections))  # TRL's template leaves empty badge lines
    return str(card)


def _split(body: str) -> list[str]:
    return re.split(r"(?m)^(?=## )", body)


def _replace(sections: list[str], heading: str, new: str) -> list[str]:
    if not any(s.startswith(heading) for s in sections):
        return [sections[0], new, *sections[1:]]
    return [new if s.startswith(heading) else s for s in sections]


def _insert_before(sections: list[str], heading: str, new: str) -> list[str]:
    index = next((i for i, s in enumerate(sections) if s.startswith(heading)), len(sections))
    return [*sections[:index], new, *sections[index:]]


def _intro(preamble: str, base_model: str | None, datasets: list[str], is_peft: bool, trainer) -> str:
    """TRL's title, with its "fine-tuned version of ..." sentence replaced by one naming DAPO, base and data."""
    title = preamble.strip().splitlines()[0] if preamble.strip() else "# Model Card"
    name = getattr(trainer, "_name", "DAPO")
    paper = getattr(trainer, "_paper", DAPO_PAPER) or DAPO_PAPER
    if base_model is None:
        base = "a base model"
    elif os.path.isdir(base_model):
        base = f"the local model `{os.path.basename(os.path.normpath(base_model))}`"
    else:
        base = f"[{base_model}](https://huggingface.co/{base_model})"
    data = " on " + ", ".join(f"[{d}](https://huggingface.co/datasets/{d})" for d in datasets) if datasets else ""
    kind = "a LoRA adapter (load it on top of the base model)" if is_peft else "a fine-tuned version"
    return (
        f"\n{title}\n\nThis model is {kind} of {base}, trained with reinforcement learning{data} using **{name}** "
        f"(Decoupled Clip and Dynamic sAmpling Policy Optimization, [arXiv:{paper['id']}]"
        f"(https://arxiv.org/abs/{paper['id']})) with dapo-trl, a DAPO trainer on top of "
        "[TRL](https://github.com/huggingface/trl).\n\n"
    )


def _training(section: str, trainer, peft_config) -> str:
    """TRL's "Training procedure" with DAPO's, the training and the LoRA settings, and two more versions."""
    tables = _table_section("### DAPO settings", "Setting", _dapo_settings(trainer.args))
    tables += _table_section("### Training", "Setting", _training_settings(trainer))
    if peft_config is not None:
        tables += _table_section("### LoRA / PEFT", "Setting", _peft_settings(peft_config))
    head, marker, versions = section.partition("### Framework versions")
    versions = versions.rstrip("\n") + f"\n- dapo-trl: {_version('dapo-trl')}\n- PEFT: {_version('peft')}\n\n"
    return head.rstrip("\n") + "\n\n" + tables + marker + versions if marker else section + tables


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
    return str(getattr(value, "value", value))  # enums (lr_scheduler_type, peft_type)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table_section(heading: str, column: str, rows: list[tuple[str, object]]) -> str:
    if not rows:
        return ""
    lines = [heading, "", f"| {column} | Value |", "| --- | --- |"]
    lines += [f"| {_cell(key)} | {_cell(_fmt(value))} |" for key, value in rows]
    return "\n".join(lines) + "\n\n"


def _get(args, *names) -> list[tuple[str, object]]:
    return [(name, getattr(args, name)) for name in names if hasattr(args, name)]


def _dapo_settings(args) -> list[tuple[str, object]]:
    rows = _get(args, "epsilon", "epsilon_high", "loss_agg_mode", "clip_ratio_c", "beta", "dynamic_sampling")
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
    rows += [(f"{name} (overlong filtering)", v) for name, v in _get(args, "mask_truncated_completions")]
    if getattr(args, "overlong_buffer_length", None) is None:
        rows.append(("soft overlong punishment", "off"))
    else:
        rows += _get(args, "overlong_buffer_length", "overlong_penalty_factor")
    return rows + _get(args, "max_completion_length")


def _training_settings(trainer) -> list[tuple[str, object]]:
    rows = _get(
        trainer.args,
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
    rows.append(("optimizer steps trained", trainer.state.global_step))
    rows.append(("processes", trainer.accelerator.num_processes))
    names = getattr(trainer, "reward_func_names", None)
    if names:
        weights = getattr(trainer, "reward_weights", None)
        weights = weights.tolist() if weights is not None else [1.0] * len(names)
        rows.append(("reward functions (weight)", [f"{n} ({_fmt(w)})" for n, w in zip(names, weights)]))
    return rows


def _peft_settings(config) -> list[tuple[str, object]]:
    rows = [("peft_type", config.peft_type)]
    rows += _get(config, "r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "bias", "use_rslora")
    return [(name, value) for name, value in rows if value is not None]


def _peft_config(trainer):
    """The active adapter's config when the trained model is a `PeftModel`, else `None`."""
    try:
        from peft import PeftModel
    except ImportError:
        return None
    model = trainer.accelerator.unwrap_model(trainer.model)
    return model.peft_config[model.active_adapter] if isinstance(model, PeftModel) else None


def _usage(base_model: str, repo: str, is_peft: bool, trainer) -> str:
    chat = getattr(getattr(trainer, "processing_class", None), "chat_template", None) is not None
    lines = ["from transformers import AutoModelForCausalLM, AutoTokenizer", ""]
    if is_peft:
        lines = [
            "from peft import PeftModel",
            *lines,
            f'base = AutoModelForCausalLM.from_pretrained("{base_model}")',
            f'model = PeftModel.from_pretrained(base, "{repo}")',
            "model = model.merge_and_unload()  # optional: a plain transformers model, faster to run",
        ]
    else:
        lines.append(f'model = AutoModelForCausalLM.from_pretrained("{repo}")')
    lines += [f'tokenizer = AutoTokenizer.from_pretrained("{repo}")', ""]
    if chat:
        lines += [
            'messages = [{"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. How many '
            'clips did she sell in total?"}]',
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
            "return_dict=True)",
        ]
    else:
        lines.append('inputs = tokenizer("1+2=", return_tensors="pt")')
    lines += [
        "output = model.generate(**inputs, max_new_tokens=256)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
    ]
    return "\n".join(lines)
