# /// script
# dependencies = ["dapo-trl", "trl>=1.16", "datasets", "math-verify>=0.9,<0.10"]
# ///
"""
The DAPO paper's own recipe: RL on DAPO-Math-17k, graded by a math-verify correctness reward (+1 / -1), with soft
overlong punishment and dynamic sampling, evaluated AIME-style (avg@k sampled, greedy pass@1).

    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/dapo_math.py \
        --config recipes/configs/dapo-math-qwen2.5-32b.yaml

Any local model folder and local data file works too (that is what the tests run, offline):

    python recipes/dapo_math.py --model_name_or_path MODEL_DIR --dataset_name train.parquet \
        --eval_dataset_name aime.jsonl --output_dir outputs/dapo-math --use_cpu true

Defaults are the paper's (Yu et al. 2025, section 4 and verl's recipe): 16 samples per prompt, completions of at most
16,384 + 4,096 tokens with a 4,096-token overlong buffer (factor 1.0), lr 1e-6 warmed up over 10 rollout steps, weight decay 0.1,
clip 0.2 / 0.28, at most 10 generation rounds of up to 3 generation batches. Batch sizes depend on the hardware: see
`recipes/configs/dapo-math-*.yaml`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, get_peft_config

from dapo_trl import DAPOConfig, DAPOTrainer
from dapo_trl.callbacks import DashboardCallback
from dapo_trl.data import _LOCAL_FORMATS, load_math_dataset
from dapo_trl.evaluation import MathEvalCallback
from dapo_trl.hub import save_for_hub
from dapo_trl.recipe_utils import (
    RecipeParser,
    check_hub_inputs,
    fail,
    push_final,
    quiet_third_party_logs,
    use_compact_console,
)
from dapo_trl.rewards import math_accuracy, math_accuracy_signed


PROG = "dapo_math.py"
# What runs without the Hub: the GSM8K demo, or this recipe on a local model folder and local data files.
OFFLINE_DEMO = (
    "python recipes/gsm8k.py --preset tiny; local files: python recipes/dapo_math.py --model_name_or_path MODEL_DIR "
    "--dataset_name train.parquet --eval_dataset_name aime.jsonl"
)
__all__ = ["main", "make_parser", "parse_args"]

# The paper's settings, as parser defaults: a `--config` file and command-line arguments override them.
PAPER_DEFAULTS = {
    "num_generations": 16,
    # 16 optimizer updates per rollout batch, as the paper; per process 16 prompts x 16 samples per rollout batch,
    # 16 completions per update. The configs size the batches for their hardware.
    "per_device_train_batch_size": 16,
    "steps_per_generation": 16,
    "max_completion_length": 20480,  # 16,384 expected + 4,096 soft-punishment buffer
    "overlong_buffer_length": 4096,
    "overlong_penalty_factor": 1.0,
    "temperature": 1.0,
    "top_p": 1.0,
    "learning_rate": 1e-6,
    "lr_scheduler_type": "constant_with_warmup",
    "warmup_steps": 160,  # the paper's 10 rollout steps of 16 optimizer updates (TRL counts optimizer steps)
    "weight_decay": 0.1,
    "max_grad_norm": 1.0,
    "epsilon": 0.2,
    "epsilon_high": 0.28,
    "beta": 0.0,
    "loss_agg_mode": "token-mean",
    "dynamic_sampling": True,
    "dynamic_sampling_max_oversample": 3.0,  # verl: generation batches of 3x the training prompts
    "max_num_gen_batches": 10,
}


@dataclass
class ScriptArguments:
    """Arguments of the DAPO-Math recipe that are neither training (`DAPOConfig`) nor model (`ModelConfig`) ones."""

    dataset_name: str = field(
        default="BytedTsinghua-SIA/DAPO-Math-17k",
        metadata={"help": "Training set: Hub id, local folder or .parquet/.json/.jsonl file, in verl's layout."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Training set configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Training split."})
    dedupe: bool = field(
        default=True, metadata={"help": "Drop repeated prompts (the Hub copy of DAPO-Math-17k repeats problems)."}
    )
    max_train_problems: int | None = field(default=None, metadata={"help": "Use only the first N problems."})
    eval_dataset_name: str | None = field(
        default="BytedTsinghua-SIA/AIME-2024",
        metadata={
            "help": "AIME-style held-out set (verl's layout, or problem/answer columns); empty string: no evaluation."
        },
    )
    eval_dataset_config: str | None = field(default=None, metadata={"help": "Evaluation set configuration name."})
    eval_dataset_split: str = field(default="train", metadata={"help": "Evaluation split."})
    num_eval_problems: int | None = field(default=None, metadata={"help": "Evaluate on the first N problems only."})
    eval_k: int = field(default=32, metadata={"help": "Samples per problem for avg@k / pass@k (paper: 32); 0: none."})
    eval_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the evaluation."})
    eval_top_p: float = field(default=0.7, metadata={"help": "Top-p of the evaluation samples (paper: 0.7)."})
    eval_greedy: bool = field(default=True, metadata={"help": "Also report greedy pass@1."})
    eval_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Evaluation completion length; defaults to `max_completion_length`."}
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Sequences per `generate` call in the evaluation."})
    eval_before: bool = field(default=True, metadata={"help": "Evaluate before training too."})
    eval_every: int | None = field(
        default=None, metadata={"help": "Also evaluate every N optimizer steps (16 per rollout batch in the configs)."}
    )
    signed_reward: bool = field(
        default=True,
        metadata={
            "help": "Paper's +1 / -1 correctness reward (`math_accuracy_signed`); false: 1 / 0 (`math_accuracy`). "
            "The overlong penalty (up to -overlong_penalty_factor) weighs twice as much against a 1 / 0 reward."
        },
    )


def make_parser() -> RecipeParser:
    parser = RecipeParser(
        (ScriptArguments, DAPOConfig, ModelConfig),
        prog=PROG,
        description="The DAPO paper's recipe: DAPO-Math-17k, math-verify reward, AIME-style evaluation. "
        "`--config recipes/configs/dapo-math-*.yaml` or `--model_name_or_path ID`; defaults are the paper's.",
    )
    parser.set_defaults(**PAPER_DEFAULTS)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, DAPOConfig, ModelConfig]:
    """The recipe's arguments; errors print one line (`dapo_math.py: error: ...`) and exit with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    if not model_args.model_name_or_path:
        fail(PROG, "pass --model_name_or_path (e.g. Qwen/Qwen2.5-32B), or --config recipes/configs/dapo-math-*.yaml")
    return script_args, training_args, model_args


def load_inputs(script_args: ScriptArguments, model_args: ModelConfig):
    """Model, tokenizer, training set and evaluation set (or `None`); exits with one line when one cannot load."""
    model_id, name = model_args.model_name_or_path, script_args.dataset_name
    data = {"--dataset_name": name, "--eval_dataset_name": script_args.eval_dataset_name}
    for option, path in data.items():  # a data file (not a Hub id) that is not there
        if path and os.path.splitext(path)[1].lower() in _LOCAL_FORMATS and not os.path.isfile(path):
            fail(PROG, f"{option}: no such file: {path!r}")
    # Offline and not cached: one message before anything heavy; cached: offline mode, no retries.
    check_hub_inputs(model_id, [d for d in data.values() if d], prog=PROG, hint=OFFLINE_DEMO)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=model_args.dtype or "auto")
        train = load_math_dataset(
            name,
            script_args.dataset_split,
            script_args.dataset_config,
            script_args.dedupe,
            script_args.max_train_problems,
        )
        name = script_args.eval_dataset_name
        test = None
        if name:
            test = load_math_dataset(
                name,
                script_args.eval_dataset_split,
                script_args.eval_dataset_config,
                True,
                script_args.num_eval_problems,
            )
    except Exception as error:  # noqa: BLE001 - one clear line instead of a traceback from deep inside a loader
        first_line = str(error).splitlines()[0][:300] if str(error) else ""
        fail(PROG, f"cannot load {model_id!r} / {name!r}: {type(error).__name__}: {first_line}")
    return model, tokenizer, train, test


def eval_callback(test, tokenizer, script_args: ScriptArguments, training_args: DAPOConfig) -> MathEvalCallback:
    """avg@k, pass@k and greedy pass@1 on `test` before, during (`--eval_every`) and after training."""
    return MathEvalCallback(
        test,
        tokenizer,
        before=script_args.eval_before,
        eval_every=script_args.eval_every,
        k=script_args.eval_k,
        max_new_tokens=script_args.eval_max_new_tokens or training_args.max_completion_length,
        temperature=script_args.eval_temperature,
        top_p=script_args.eval_top_p,
        greedy=script_args.eval_greedy,
        batch_size=script_args.eval_batch_size,
        seed=training_args.seed,
    )


def save_and_push(trainer, script_args, training_args, model_args, metrics: dict, push: bool) -> None:
    """`OUTPUT_DIR/final/`: the model (the adapter with --use_peft), tokenizer and model card; pushed if asked."""
    final_dir = os.path.join(training_args.output_dir, "final")
    after = metrics.get("after") or {}
    card_metrics = {f"{script_args.eval_dataset_name} {k} after RL": f"{v:.1%}" for k, v in after.items() if "@" in k}
    save_for_hub(
        trainer,
        final_dir,
        base_model=model_args.model_name_or_path,
        dataset_name=script_args.dataset_name if "/" in script_args.dataset_name else None,
        repo_id=training_args.hub_model_id,
        metrics=card_metrics or None,
    )
    if push:
        push_final(final_dir, training_args)


def main(argv: list[str] | None = None) -> dict:
    quiet_third_party_logs()
    script_args, training_args, model_args = parse_args(argv)
    start = time.perf_counter()
    push, training_args.push_to_hub = training_args.push_to_hub, False  # we push the final folder ourselves
    if push and not training_args.hub_model_id:
        fail(PROG, "--push_to_hub needs --hub_model_id (e.g. <user>/qwen2.5-32b-dapo-math)")
    reward = math_accuracy_signed if script_args.signed_reward else math_accuracy
    # Filter on correctness alone, never on the overlong penalty added to it.
    training_args.dynamic_sampling_metric = training_args.dynamic_sampling_metric or reward.__name__
    model, tokenizer, train, test = load_inputs(script_args, model_args)

    callbacks = [DashboardCallback()]
    if test is not None:
        callbacks.append(eval_callback(test, tokenizer, script_args, training_args))
    trainer = DAPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=callbacks,
    )
    use_compact_console(trainer)  # one line per logging step; every metric goes to trainer_state.json
    rl_start = time.perf_counter()
    trainer.train()
    metrics: dict = {"train_problems": len(train), "rl_steps": trainer.state.global_step}
    metrics["rl_seconds"] = time.perf_counter() - rl_start  # evaluations included
    if test is not None:
        metrics.update(callbacks[-1].results)
    metrics["total_seconds"] = time.perf_counter() - start
    if PartialState().is_main_process:
        with open(os.path.join(training_args.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    save_and_push(trainer, script_args, training_args, model_args, metrics, push)
    return metrics


if __name__ == "__main__":
    main()
    if torch.distributed.is_initialized():  # under torchrun: a clean exit instead of gloo aborting at shutdown
        torch.distributed.destroy_process_group()
