"""`dapo_trl.recipe_utils` and the console: what a person sees from a recipe's --help, its errors and its logs."""

from __future__ import annotations

import pytest
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from dapo_trl.callbacks import CompactPrinterCallback, CompactProgressCallback, format_log, use_compact_console
from tests.helpers import load_recipe


def run_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_recipe().parse_args(argv)
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_help_leads_with_recipe_and_dapo_options(capsys):
    code, out, _ = run_parser(["--help"], capsys)
    assert code == 0
    groups = [line for line in out.splitlines() if not line.startswith(" ") and line.endswith("options:")]
    assert groups == ["options:", "gsm8k.py options:", "DAPO options:", "common training options:"]
    for option in ["--preset", "--epsilon_high", "--dynamic_sampling_at_cap", "--model_name_or_path", "--max_steps"]:
        assert f"  {option} " in out, option
    assert "--adam_beta1" not in out and "--vllm_mode" not in out  # TRL's / transformers' others: --help-all
    assert "--help-all lists them" in out.splitlines()[-1]
    assert "--output-dir" not in out  # the dash aliases still work, they are just not listed twice
    assert len(out.splitlines()) < 260


def test_help_all_lists_everything_below(capsys):
    code, out, _ = run_parser(["--help-all"], capsys)
    assert code == 0
    assert out.index("DAPO options") < out.index("TRL GRPOConfig options") < out.index("--vllm_mode")
    assert "transformers TrainingArguments options:" in out and "--adam_beta1" in out
    assert "TRL ModelConfig options:" in out and "--load_in_4bit" in out


def test_hidden_options_are_still_accepted():
    script_args, training_args, model_args = load_recipe().parse_args(
        ["--preset", "tiny", "--adam-beta1", "0.8", "--load_in_4bit", "false", "--output_dir", "x"]
    )
    assert training_args.adam_beta1 == 0.8 and model_args.load_in_4bit is False


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--preset", "tiny", "--epsilon_high", "-1"], "--epsilon_high=-1.0 must be >= 0"),
        (["--preset", "tiny", "--num_generations", "3"], "must be divisible by --num_generations (3)"),
        (["--preset", "tiny", "--num_generations", "1"], "num_generations must be >= 2 (got 1)"),
        (["--preset", "tni"], "argument --preset: invalid choice: 'tni'"),
        (["--preset", "tiny", "--epsilon_hihg", "0.3"], "unrecognized arguments: --epsilon_hihg (did you mean"),
        (["--preset", "tiny", "--max_steps", "ten"], "argument --max_steps: invalid int value: 'ten'"),
        (["--preset", "tiny", "--loss_agg_mode", "mean"], "argument --loss_agg_mode: invalid choice: 'mean'"),
        (["--preset", "tiny", "--use_cpu", "false", "--bf16", "true"], "--bf16=True needs a bf16-capable GPU"),
        (["--config", "does-not-exist.yaml"], "--config: "),
    ],
)
def test_errors_are_one_line_naming_the_option(argv, expected, capsys):
    code, out, err = run_parser(argv, capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith("gsm8k.py: error: ") and expected in lines[0], err
    assert lines[1:] == ["(see gsm8k.py --help)"], err  # no usage block, no traceback


def test_bad_yaml_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rate: [1e-4\n")
    code, _, err = run_parser(["--config", str(config)], capsys)
    assert code == 2 and err.startswith("gsm8k.py: error: --config: invalid YAML") and len(err.splitlines()) == 2


def test_format_log_training_line_and_missing_values():
    logs = {"reward": 0.25, "entropy": 0.5, "loss": 0.1234, "clip_ratio/low_mean": 0.01, "clip_ratio/high_mean": 0.0}
    line = format_log(logs, step=7, max_steps=300)
    assert (
        line == "step   7/300 | reward 0.250 | keep - | rounds - | clip lo/hi 1.00%/0.00% | entropy 0.500 | loss 0.123"
    )
    assert format_log({"reward": float("nan"), "loss": None}, step=1).startswith("step 1 | reward - |")
    assert len(format_log({f"key{i}": 1.0 for i in range(60)}, step=1, max_steps=10)) < 120


class _FakeTrainer:
    def __init__(self, *callbacks):
        from transformers.trainer_callback import CallbackHandler

        self.callback_handler = CallbackHandler(list(callbacks), None, None, None, None)

    def remove_callback(self, callback):
        self.callback_handler.remove_callback(callback)

    def add_callback(self, callback):
        self.callback_handler.add_callback(callback)


def test_use_compact_console_swaps_the_printing_callbacks():
    for default, compact in [(ProgressCallback, CompactProgressCallback), (PrinterCallback, CompactPrinterCallback)]:
        trainer = _FakeTrainer(default())
        use_compact_console(trainer)
        assert [type(cb) for cb in trainer.callback_handler.callbacks] == [compact]


def test_recipe_console_prints_compact_lines(tmp_path, capsys):
    """The tiny recipe's console: one short line per logging step, no metric dictionary, no FutureWarning."""
    import json
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_recipe().main(
            ["--preset", "tiny", "--output_dir", str(tmp_path), "--sft_steps", "2", "--max_steps", "4",
             "--logging_steps", "2", "--num_train_problems", "64", "--num_eval_problems", "4",
             "--max_completion_length", "16", "--disable_tqdm", "true"]
        )  # fmt: skip
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in steps] == ["step 2/4", "step 4/4"]
    assert all("reward" in line and "clip lo/hi" in line and "entropy" in line for line in steps)
    assert "{'loss'" not in out and "done: 4 steps in" in out
    assert not [w for w in caught if "gradient_checkpointing" in str(w.message)]
    state = json.loads((tmp_path / "trainer_state.json").read_text())  # the full metrics are in the run's files
    assert any("completions/mean_length" in entry for entry in state["log_history"])
