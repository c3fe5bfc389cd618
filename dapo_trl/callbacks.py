"""Trainer callbacks: a console a person can read, and the dashboard drawn when training ends.

```python
from dapo_trl.callbacks import DashboardCallback, use_compact_console

trainer = DAPOTrainer(..., callbacks=[DashboardCallback()])  # writes <output_dir>/dashboard.png when training ends
use_compact_console(trainer)  # one short line per logging step instead of transformers' metric dictionaries
```

transformers prints every log as a dictionary of all metrics (about 40 keys, 1,500 characters per line for
`DAPOTrainer`). [`use_compact_console`] swaps its `ProgressCallback` / `PrinterCallback` for subclasses that print one
line with what tells a person whether DAPO is learning:

    step  40/300 | reward 0.312 | keep 88% | rounds 1.0 | clip lo/hi 0.26%/0.03% | entropy 0.154 | loss -0.0713

The full metrics still go where they always go: `trainer.state.log_history` (saved as `trainer_state.json` by
`trainer.save_state()` and in every checkpoint) and the trackers `report_to` asks for (TensorBoard, trackio, ...).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback


__all__ = [
    "CompactPrinterCallback",
    "CompactProgressCallback",
    "DashboardCallback",
    "format_log",
    "use_compact_console",
]

# (label, logged key(s), format): the first key present is shown; keys absent from a log show as "-".
_COLUMNS = (
    ("reward", ("reward",), "{:.3f}"),
    ("keep", ("dynamic_sampling/keep_rate",), "{:.0%}"),
    ("rounds", ("dynamic_sampling/rounds",), "{:.1f}"),
    ("entropy", ("entropy",), "{:.3f}"),
    ("loss", ("policy_loss", "loss"), "{:.3g}"),
)
_CLIP = ("clip_ratio/low_mean", "clip_ratio/high_mean")


def _number(logs: Mapping[str, Any], key: str) -> float | None:
    value = logs.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _cell(logs: Mapping[str, Any], keys: tuple[str, ...], fmt: str) -> str:
    for key in keys:
        value = _number(logs, key)
        if value is not None:
            return fmt.format(value)
    return "-"


def format_log(logs: Mapping[str, Any], step: int, max_steps: int | None = None) -> str:
    """
    One console line for a log of the trainer: training, evaluation, or the end-of-training summary.

    Example:

    >>> format_log({"reward": 0.3125, "dynamic_sampling/keep_rate": 0.875, "dynamic_sampling/rounds": 1.0,
    ...             "clip_ratio/low_mean": 0.0026, "clip_ratio/high_mean": 0.0003, "entropy": 0.154,
    ...             "loss": -0.0713}, step=40, max_steps=300)
    'step  40/300 | reward 0.312 | keep 88% | rounds 1.0 | clip lo/hi 0.26%/0.03% | entropy 0.154 | loss -0.0713'
    >>> format_log({"train_runtime": 56.3, "train_loss": -0.044}, step=300, max_steps=300)
    'done: 300 steps in 56s, mean train loss -0.044'
    >>> format_log({"eval_reward": 0.5, "eval_loss": 0.01}, step=50)
    'eval at step 50 | reward 0.500 | loss 0.01'
    """
    if "train_runtime" in logs:
        loss = _number(logs, "train_loss")
        tail = "" if loss is None else f", mean train loss {loss:.3g}"
        return f"done: {step} steps in {logs['train_runtime']:.0f}s{tail}"
    if any(key.startswith("eval_") for key in logs):
        evals = {key[len("eval_") :]: value for key, value in logs.items() if key.startswith("eval_")}
        cells = [
            f"{label} {_cell(evals, keys, fmt)}" for label, keys, fmt in _COLUMNS if _cell(evals, keys, fmt) != "-"
        ]
        return " | ".join([f"eval at step {step}", *cells])
    width = len(str(max_steps)) if max_steps else 0
    cells = [f"step {step:>{width}}/{max_steps}" if max_steps else f"step {step}"]
    for label, keys, fmt in _COLUMNS:
        if label == "entropy":  # clip fractions sit between the sampling and the loss columns
            low, high = (_number(logs, key) for key in _CLIP)
            clip = "-" if low is None or high is None else f"{low:.2%}/{high:.2%}"
            cells.append(f"clip lo/hi {clip}")
        cells.append(f"{label} {_cell(logs, keys, fmt)}")
    return " | ".join(cells)


class CompactProgressCallback(ProgressCallback):
    """transformers' progress bar, with one [`format_log`] line per log instead of the metric dictionary."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(format_log(logs, state.global_step, state.max_steps))


class CompactPrinterCallback(PrinterCallback):
    """transformers' printer (used with `disable_tqdm=True`), printing one [`format_log`] line per log."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(format_log(logs, state.global_step, state.max_steps), flush=True)


def use_compact_console(trainer) -> None:
    """
    Replace the trainer's `ProgressCallback` / `PrinterCallback` by [`CompactProgressCallback`] /
    [`CompactPrinterCallback`]: one short line per logging step; the logs themselves are unchanged. Other progress
    callbacks (e.g. the notebook one) are left alone.
    """
    for default, compact in ((ProgressCallback, CompactProgressCallback), (PrinterCallback, CompactPrinterCallback)):
        callback = next((cb for cb in trainer.callback_handler.callbacks if type(cb) is default), None)
        if callback is not None:
            trainer.remove_callback(callback)
            trainer.add_callback(compact)


class DashboardCallback(TrainerCallback):
    """Draws `dapo_trl.plotting.plot_dashboard` into `args.output_dir` when training ends (main process only).

    Drawing failures are turned into a warning, so they never lose a finished run.

    Args:
        filename: name of the PNG, relative to `args.output_dir`.
        title: figure title; defaults to the output folder's name.
        dpi: resolution of the PNG.

    Example:

    ```python
    from dapo_trl import DAPOConfig, DAPOTrainer
    from dapo_trl.callbacks import DashboardCallback

    trainer = DAPOTrainer(model=..., reward_funcs=..., args=DAPOConfig(output_dir="out"), train_dataset=...,
                          callbacks=[DashboardCallback()])
    trainer.train()  # then out/dashboard.png
    ```
    """

    def __init__(self, filename: str = "dashboard.png", title: str | None = None, dpi: int = 120):
        self.filename = filename
        self.title = title
        self.dpi = dpi
        self.path: str | None = None  # where the last dashboard was written

    def on_train_end(self, args, state, control, **kwargs):
        from .plotting import plot_dashboard

        if not state.is_world_process_zero:
            return
        path = os.path.join(args.output_dir, self.filename)
        title = self.title or os.path.basename(os.path.normpath(args.output_dir)) or None
        try:
            plot_dashboard(state.log_history, out_path=path, title=title, dpi=self.dpi)
        except Exception as error:  # a plot must not turn a finished run into a failed one
            warnings.warn(f"DashboardCallback could not write {path}: {error!r}", UserWarning, stacklevel=2)
            return
        self.path = path
