# /// script
# dependencies = ["dapo-trl", "trl>=1.16", "datasets"]
# ///
"""
DAPO on GSM8K-style math, graded by final-answer correctness (`#### <number>`).

Offline demo (no Hub access, ~a few minutes on 2 CPU cores): builds a tiny character-level Qwen2 model, warm-starts it
on a built-in arithmetic task (3-term sums; 70% of its worked solutions deliberately stop after the first addition,
`--sft_early_answer_rate`), then trains it with DAPO and reports held-out greedy accuracy before and after:

    python recipes/gsm8k.py --preset tiny

Real models (needs the Hugging Face Hub or a local cache):

    python recipes/gsm8k.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name openai/gsm8k \
        --output_dir outputs/qwen-gsm8k --max_completion_length 512 --num_generations 8
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, get_peft_config

from dapo_trl import DAPOConfig, DAPOTrainer
from dapo_trl.callbacks import DashboardCallback
from dapo_trl.data import arithmetic_splits, greedy_accuracy, gsm8k_to_conversational, supervised_warm_start
from dapo_trl.hub import save_for_hub
from dapo_trl.recipe_utils import (
    RecipeParser,
    check_hub_inputs,
    fail,
    go_offline,
    hub_reachable,
    push_final,
    quiet_third_party_logs,
    use_compact_console,
)
from dapo_trl.rewards import gsm8k_accuracy, gsm8k_format
from dapo_trl.testing import save_tiny_model


PROG = "gsm8k.py"
OFFLINE_DEMO = "python recipes/gsm8k.py --preset tiny"
__all__ = ["hub_reachable", "main", "make_parser", "parse_args"]  # hub_reachable: re-exported for the tests

# Everything the tiny preset sets; command-line arguments given after `--preset tiny` override these.
TINY_PRESET = {
    "output_dir": "outputs/tiny",
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 10,
    "seed": 0,
    "max_steps": 300,
    "learning_rate": 1e-4,  # 3e-4 and up made the sampled reward fall; 1e-4 is stable
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "steps_per_generation": 4,  # 4 optimizer updates per rollout of 64 completions (8 prompts x 8)
    "num_generations": 8,
    "temperature": 1.0,
    "max_completion_length": 24,  # the longest worked answer (`9+9=18\n18+9=27\n#### 27`) plus EOS
    "dataloader_num_workers": 0,
}


@dataclass
class ScriptArguments:
    """Arguments of the recipe that are neither training (`DAPOConfig`) nor model (`ModelConfig`) arguments."""

    preset: str | None = field(
        default=None,
        metadata={"help": "`tiny`: fully offline demo (tiny model + built-in arithmetic task).", "choices": ["tiny"]},
    )
    dataset_name: str = field(
        default="openai/gsm8k", metadata={"help": "Hub dataset id (GSM8K layout); ignored by `--preset tiny`."}
    )
    dataset_config: str = field(default="main", metadata={"help": "Dataset configuration name."})
    num_train_problems: int = field(default=700, metadata={"help": "Tiny preset: training problems."})
    num_eval_problems: int = field(default=200, metadata={"help": "Held-out problems for the greedy evaluation."})
    max_value: int = field(default=9, metadata={"help": "Tiny preset: largest term of the sums."})
    num_terms: int = field(default=3, metadata={"help": "Tiny preset: terms per sum."})
    format_reward_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of `gsm8k_format` (final line `#### <n>`) next to `gsm8k_accuracy` (weight 1); 0 = off. "
            "Dynamic sampling keeps filtering on accuracy."
        },
    )
    sft_steps: int = field(default=350, metadata={"help": "Tiny preset: supervised warm-start steps."})
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "Tiny preset: warm-start learning rate."})
    sft_batch_size: int = field(default=32, metadata={"help": "Tiny preset: warm-start batch size."})
    sft_early_answer_rate: float = field(
        default=0.7,
        metadata={
            "help": "Tiny preset: fraction of warm-start solutions that stop after their first line and report that "
            "partial sum (`dapo_trl.data.early_answer`), a deliberately sloppy SFT set that RL then corrects."
        },
    )
    hidden_size: int = field(default=64, metadata={"help": "Tiny preset: model width."})
    num_threads: int = field(default=1, metadata={"help": "Tiny preset: torch CPU threads."})
    eval_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Greedy evaluation length; defaults to `max_completion_length`."}
    )


def make_parser() -> RecipeParser:
    return RecipeParser(
        (ScriptArguments, DAPOConfig, ModelConfig),
        prog=PROG,
        description="DAPO on GSM8K-style math: `--preset tiny` is the offline demo, `--model_name_or_path ID` a real model.",
    )


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, DAPOConfig, ModelConfig]:
    """The recipe's arguments; errors print one line (`gsm8k.py: error: ...`) and exit with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--preset" in argv and argv[argv.index("--preset") + 1 :][:1] == ["tiny"]:
        preset = []
        for key, value in TINY_PRESET.items():
            preset += [f"--{key}", str(value)]
        argv = preset + argv  # later occurrences win: the user's arguments override the preset
    return make_parser().parse_args_and_config(argv)


def load_hub_inputs(script_args: ScriptArguments, model_args: ModelConfig):
    """Model, tokenizer and (train, test) GSM8K splits from the Hub or the local cache; one line and exit 2 if not."""
    from datasets import load_dataset

    model_id = model_args.model_name_or_path
    # Offline and not cached: one message before anything heavy; cached: offline mode, no retries.
    check_hub_inputs(model_id, script_args.dataset_name, prog=PROG, hint=OFFLINE_DEMO)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=model_args.dtype or "auto")
        dataset = load_dataset(script_args.dataset_name, script_args.dataset_config)
    except Exception as error:  # noqa: BLE001 - any failure here means: not loadable here
        fail(
            PROG,
            f"cannot load model {model_id!r} / dataset {script_args.dataset_name!r}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''} (offline demo: {OFFLINE_DEMO})",
        )
    train = gsm8k_to_conversational(dataset["train"])
    test = gsm8k_to_conversational(dataset["test"]).select(
        range(min(script_args.num_eval_problems, len(dataset["test"])))
    )
    return model, tokenizer, train, test


def prepare_tiny(script_args: ScriptArguments, training_args: DAPOConfig):
    """Tiny model built locally, warm-started on the built-in arithmetic task; returns model, tokenizer, splits."""
    torch.manual_seed(training_args.seed)
    model_dir = save_tiny_model(
        os.path.join(training_args.output_dir, "tiny-model"),
        hidden_size=script_args.hidden_size,
        intermediate_size=2 * script_args.hidden_size,
        max_position_embeddings=64,
        seed=training_args.seed,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    splits = arithmetic_splits(
        script_args.num_train_problems,
        script_args.num_eval_problems,
        seed=training_args.seed,
        num_terms=script_args.num_terms,
        max_value=script_args.max_value,
    )
    stats = supervised_warm_start(
        model,
        tokenizer,
        splits["train"],
        steps=script_args.sft_steps,
        batch_size=script_args.sft_batch_size,
        learning_rate=script_args.sft_learning_rate,
        seed=training_args.seed,
        early_answer_rate=script_args.sft_early_answer_rate,
    )
    print(f"warm start: {script_args.sft_steps} supervised steps, loss {stats['loss']:.3f}, {stats['seconds']:.0f}s")
    return model, tokenizer, splits["train"], splits["test"]


def load_inputs(script_args: ScriptArguments, training_args: DAPOConfig, model_args: ModelConfig, push: bool):
    """Model, tokenizer, train and held-out splits: the tiny preset's, or a Hub model and dataset."""
    if script_args.preset == "tiny":
        if not push:
            go_offline()  # nothing of the demo lives on the Hub: not even telemetry should try the network
        torch.set_num_threads(script_args.num_threads)  # tiny matmuls: more threads only add sync overhead
        return prepare_tiny(script_args, training_args)
    if model_args.model_name_or_path:
        return load_hub_inputs(script_args, model_args)
    fail(PROG, "pass --preset tiny (the offline demo) or --model_name_or_path ID (e.g. Qwen/Qwen2.5-0.5B-Instruct)")


def build_trainer(script_args, training_args, model_args, model, tokenizer, train) -> DAPOTrainer:
    reward_funcs = [gsm8k_accuracy]
    if script_args.format_reward_weight:
        reward_funcs.append(gsm8k_format)
        training_args.reward_weights = [1.0, script_args.format_reward_weight]
        training_args.dynamic_sampling_metric = training_args.dynamic_sampling_metric or "gsm8k_accuracy"
    trainer = DAPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),  # None unless --use_peft: then only the LoRA adapter trains
        callbacks=[DashboardCallback()],  # writes dashboard.png into output_dir when training ends
    )
    use_compact_console(trainer)  # one line per logging step; every metric goes to trainer_state.json
    return trainer


def save_final(trainer, script_args, training_args, model_args, metrics: dict, push: bool) -> str:
    """OUTPUT_DIR/final/: the model (only the adapter with --use_peft), tokenizer and model card; pushed if asked."""
    final_dir = os.path.join(training_args.output_dir, "final")
    tiny = script_args.preset == "tiny"
    save_for_hub(
        trainer,
        final_dir,
        # The tiny preset's base model is a local folder, which the card names but leaves out of its Hub metadata.
        base_model=os.path.join(training_args.output_dir, "tiny-model") if tiny else model_args.model_name_or_path,
        dataset_name=None if tiny else script_args.dataset_name,
        extra="Trained on the built-in arithmetic task of `dapo_trl.data`." if tiny else None,
        repo_id=training_args.hub_model_id,
        metrics={
            "held-out greedy accuracy before RL": f"{metrics['accuracy_before']:.1%}",
            "held-out greedy accuracy after RL": f"{metrics['accuracy_after']:.1%}",
            "held-out problems": metrics["eval_problems"],
        },
    )
    print(f"saved to {final_dir}")
    if push:
        push_final(final_dir, training_args)
    return final_dir


def main(argv: list[str] | None = None) -> dict:
    quiet_third_party_logs()
    script_args, training_args, model_args = parse_args(argv)
    start = time.perf_counter()
    # We push ourselves, once, with our model card (transformers would create the repo at init and push its own).
    push, training_args.push_to_hub = training_args.push_to_hub, False
    if push and not training_args.hub_model_id:
        fail(PROG, "--push_to_hub needs --hub_model_id (e.g. <user>/qwen2.5-0.5b-gsm8k-dapo)")
    model, tokenizer, train, test = load_inputs(script_args, training_args, model_args, push)

    eval_tokens = script_args.eval_max_new_tokens or training_args.max_completion_length
    before = greedy_accuracy(model, tokenizer, test, max_new_tokens=eval_tokens)
    print(f"held-out greedy accuracy before RL: {before:.1%} ({len(test)} problems)")
    trainer = build_trainer(script_args, training_args, model_args, model, tokenizer, train)
    out = training_args.output_dir
    print(f"DAPO: {training_args.max_steps} steps, a line every {training_args.logging_steps}; all metrics in {out}/")
    rl_start = time.perf_counter()
    trainer.train()
    rl_seconds = time.perf_counter() - rl_start
    trainer.save_state()  # OUTPUT_DIR/trainer_state.json: every logged metric; `dapo-trl plot OUTPUT_DIR` reads it

    after = greedy_accuracy(trainer.model, tokenizer, test, max_new_tokens=eval_tokens)
    metrics = {
        "accuracy_before": before,
        "accuracy_after": after,
        "eval_problems": len(test),
        "rl_steps": trainer.state.global_step,
        "rl_seconds": rl_seconds,
        "total_seconds": time.perf_counter() - start,
    }
    print(f"accuracy before: {before:.1%} -> after: {after:.1%} ({len(test)} held-out problems)")
    if trainer.is_world_process_zero():
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    save_final(trainer, script_args, training_args, model_args, metrics, push)
    print(f"dashboard: {os.path.join(out, 'dashboard.png')} (redraw: dapo-trl plot {out})")
    return metrics


if __name__ == "__main__":
    main()
    if torch.distributed.is_initialized():  # under torchrun: a clean exit instead of gloo aborting at shutdown
        torch.distributed.destroy_process_group()
