"""dapo_trl.plotting and the `dapo-trl plot` command: histories built by hand, and one real tiny run."""

from __future__ import annotations

import doctest
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import dapo_trl.plotting
from dapo_trl import DAPOTrainer
from dapo_trl.cli import main
from dapo_trl.plotting import DashboardCallback, load_history, plot_comparison, plot_dashboard

from .helpers import kind_dataset, kind_reward, make_config


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and header chunk."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_valid_png(path, min_bytes: int = 20_000) -> None:
    width, height = png_size(path)
    assert width >= 800 and height >= 500, (width, height)
    assert os.path.getsize(path) >= min_bytes  # six drawn panels, not a blank image


def synthetic_history(steps: int = 8, steps_per_generation: int = 2, dynamic_sampling: bool = True, seed: float = 0):
    """A log history shaped like DAPOTrainer's: generation metrics only on generation steps, loss metrics every step."""
    history, tokens = [], 0
    for step in range(1, steps + 1):
        entry = {"loss": 0.1 / step, "grad_norm": 1.0, "learning_rate": 1e-6, "policy_loss": 0.1 / step}
        entry.update(
            {"entropy": 2.0 - 0.05 * step - seed, "clip_ratio/low_mean": 0.001, "clip_ratio/high_mean": 0.004}
        )
        if (step - 1) % steps_per_generation == 0:
            tokens += 5000 + 100 * step
            entry.update(
                {
                    "num_tokens": float(tokens),
                    "completions/mean_length": 300.0 + 10 * step,
                    "completions/clipped_ratio": 0.05,
                    "rewards/accuracy/mean": 0.2 + 0.05 * step + seed,
                    "rewards/overlong_penalty/mean": -0.01 * step,
                    "reward": 0.2 + 0.04 * step + seed,
                }
            )
            if dynamic_sampling:
                entry.update({"dynamic_sampling/keep_rate": 0.6, "dynamic_sampling/rounds": 1.0 + step % 3})
        entry.update({"epoch": step / 100, "step": step})
        history.append(entry)
    history.append({"train_runtime": 10.0, "train_loss": 0.05, "epoch": steps / 100, "step": steps})
    return history


def write_state(folder: Path, history, name: str = "trainer_state.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"global_step": history[-1]["step"] if history else 0, "log_history": history}))
    return path


def note_texts(fig) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts]


# ------------------------------------------------------------------------------------------------------ load_history


def test_load_history_prefers_run_dir_state(tmp_path):
    write_state(tmp_path, synthetic_history(4))
    write_state(tmp_path / "checkpoint-2", synthetic_history(2))
    assert load_history(tmp_path)[-1]["step"] == 4
    assert load_history(tmp_path / "trainer_state.json")[-1]["step"] == 4  # the file itself works too


def test_load_history_falls_back_to_latest_checkpoint(tmp_path):
    for step in (2, 10, 9):  # numeric order, not lexicographic: checkpoint-10 is the latest
        write_state(tmp_path / f"checkpoint-{step}", synthetic_history(step))
    (tmp_path / "checkpoint-11").mkdir()  # an incomplete checkpoint without a state is ignored
    (tmp_path / "checkpoint-final").mkdir()
    assert load_history(tmp_path)[-1]["step"] == 10


def test_load_history_error_names_the_folder(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_history(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_history(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------------ dashboard


def test_dashboard_full_history(tmp_path):
    write_state(tmp_path / "my-run" / "checkpoint-8", synthetic_history(8))
    out = tmp_path / "plots" / "dash.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every panel's metrics are there: no warning
        fig = plot_dashboard(tmp_path / "my-run", out_path=out)
    assert_valid_png(out)
    assert "my-run" in fig._suptitle.get_text()
    titles = [ax.get_title() for ax in fig.axes]
    for title in ["Policy loss", "Policy entropy", "Reward / accuracy", "Completion length", "Dynamic sampling"]:
        assert any(title in t for t in titles), (title, titles)
    assert not any(t.startswith("not logged") for t in note_texts(fig))
    reward_ax = next(ax for ax in fig.axes if "Reward" in ax.get_title())
    labels = [line.get_label() for line in reward_ax.get_lines()]
    assert labels == ["reward (weighted sum)", "accuracy", "overlong_penalty"]
    assert len(reward_ax.get_lines()[0].get_xdata()) == 4  # generation steps only


def test_dashboard_missing_metrics_notes_and_warns(tmp_path):
    history = synthetic_history(6, dynamic_sampling=False)
    for entry in history:
        for key in (
            "entropy",
            "clip_ratio/low_mean",
            "clip_ratio/high_mean",
            "policy_loss",
            "completions/clipped_ratio",
        ):
            entry.pop(key, None)
    history[2]["reward"] = None  # TRL logs None when every reward of a step was NaN
    out = tmp_path / "dash.png"
    with pytest.warns(UserWarning, match="not logged") as record:
        fig = plot_dashboard(history, out_path=out, title="partial")
    message = str(record[0].message)
    for name in ["entropy", "dynamic_sampling/keep_rate", "dynamic_sampling/rounds", "clip_ratio/low_mean"]:
        assert name in message
    assert "policy_loss" not in message  # `loss` stands in for it
    notes = note_texts(fig)
    assert "not logged:\nentropy" in notes
    assert "not logged:\ndynamic_sampling/keep_rate\ndynamic_sampling/rounds" in notes
    assert any("completions/clipped_ratio" in note for note in notes)  # partial panel: small note
    loss_ax = next(ax for ax in fig.axes if "Policy loss" in ax.get_title())
    assert loss_ax.get_lines()[0].get_label() == "loss"
    assert_valid_png(out, min_bytes=10_000)


def test_dashboard_empty_history_does_not_crash():
    with pytest.warns(UserWarning):
        fig = plot_dashboard([])
    assert sum(note.startswith("not logged") for note in note_texts(fig)) == 6


def test_dashboard_dual_clip_and_eval(tmp_path):
    history = synthetic_history(4)
    for entry in history[:-1]:
        entry["clip_ratio/dual_mean"] = 0.0005
    history.insert(2, {"eval_reward": 0.5, "eval_loss": 0.1, "step": 2})
    fig = plot_dashboard(history)
    lines = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    assert {"dual clip (A<0)", "eval reward"} <= lines


# ------------------------------------------------------------------------------------------------------ comparison


def test_comparison_of_two_runs(tmp_path):
    for name, seed in (("a/out", 0.0), ("b/out", 0.1)):
        write_state(tmp_path / name / "checkpoint-8", synthetic_history(8, seed=seed))
    out = tmp_path / "comparison.png"
    fig = plot_comparison([tmp_path / "a" / "out", tmp_path / "b" / "out"], out_path=out)
    assert_valid_png(out)
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["a/out", "b/out"]  # same folder names
    top_reward, bottom_reward = fig.axes[0], fig.axes[3]
    assert len(top_reward.get_lines()) == 2 and len(bottom_reward.get_lines()) == 2
    assert "tokens" in bottom_reward.get_xlabel()
    # entropy is logged every step, num_tokens every other: one point per generation batch on the token axis
    bottom_entropy = fig.axes[4]
    xs = list(bottom_entropy.get_lines()[0].get_xdata())
    assert xs == sorted(set(xs)) and len(xs) == 4


def test_comparison_missing_metric_and_labels():
    with_tokens = synthetic_history(4)
    without = [
        {k: v for k, v in entry.items() if k not in ("num_tokens", "entropy")} for entry in synthetic_history(4)
    ]
    with pytest.warns(UserWarning, match="GRPO: num_tokens"):
        fig = plot_comparison({"DAPO": with_tokens, "GRPO": without})
    notes = note_texts(fig)
    assert any("GRPO: entropy" in note for note in notes)
    assert any("GRPO: num_tokens" in note for note in notes)


# ------------------------------------------------------------------------------------------------------ real run


@pytest.fixture(scope="module")
def real_run(tiny_model_dir, tmp_path_factory):
    """3 optimizer steps of DAPOTrainer on the tiny model, with the dashboard callback and a checkpoint per step."""
    out = tmp_path_factory.mktemp("real-run")
    callback = DashboardCallback()
    args = make_config(out, max_steps=3, save_strategy="steps", save_steps=1, save_only_model=True)
    trainer = DAPOTrainer(
        model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset(), callbacks=[callback]
    )
    trainer.train()
    return out, trainer, callback


def test_real_run_dashboard_callback(real_run):
    out, trainer, callback = real_run
    assert callback.path == str(out / "dashboard.png")
    assert_valid_png(out / "dashboard.png")
    history = load_history(out)  # from checkpoint-3
    assert [entry["step"] for entry in history if "policy_loss" in entry] == [1, 2, 3]
    for key in ["entropy", "reward", "completions/mean_length", "dynamic_sampling/keep_rate", "clip_ratio/high_mean"]:
        assert any(key in entry for entry in history), key
    # num_tokens: TRL's cumulative prompt + completion tokens of every generation (dropped groups included)
    tokens = [entry["num_tokens"] for entry in history if "num_tokens" in entry]
    assert tokens == sorted(tokens) and tokens[0] > 0
    assert trainer.state.num_input_tokens_seen == tokens[-1]


def test_real_run_cli_dashboard_and_comparison(real_run, tmp_path, monkeypatch, capsys):
    out, _, _ = real_run
    other = tmp_path / "other-run"
    shutil.copytree(out / "checkpoint-2", other / "checkpoint-2", ignore=shutil.ignore_patterns("*.safetensors"))

    dash = tmp_path / "dash.png"
    assert main(["plot", str(other), "-o", str(dash), "--title", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(dash)
    assert_valid_png(dash)

    assert main(["plot", str(other)]) == 0  # default: RUN_DIR/dashboard.png
    assert capsys.readouterr().out.strip() == os.path.join(str(other), "dashboard.png")
    assert_valid_png(other / "dashboard.png")

    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(out), str(other)]) == 0  # default: ./comparison.png
    assert capsys.readouterr().out.strip() == "comparison.png"
    assert_valid_png(tmp_path / "comparison.png")


# ------------------------------------------------------------------------------------------------------ cli


def test_cli_error_for_folder_without_state(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "trainer_state.json" in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "empty" / "dashboard.png").exists()


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["plot"])
    assert info.value.code == 2


def test_console_script_help():
    script = Path(sys.executable).with_name("dapo-trl")
    if not script.exists():
        pytest.skip("dapo-trl console script not installed (pip install -e .)")
    result = subprocess.run([str(script), "plot", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "RUN_DIR" in result.stdout and "--output" in result.stdout and "--title" in result.stdout


def test_docstring_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(dapo_trl.plotting, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
    assert_valid_png(tmp_path / "comparison.png")


def test_plot_command_imports_no_transformers():
    """`dapo-trl plot` stays light: plotting and the CLI import matplotlib, not transformers (seconds to import)."""
    code = "import sys, dapo_trl.plotting, dapo_trl.cli; print(sorted(m for m in ('transformers', 'trl') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
    assert dapo_trl.plotting.DashboardCallback is DashboardCallback  # still importable from here, lazily
