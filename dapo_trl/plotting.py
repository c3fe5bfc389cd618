"""Plots of a run's logged metrics: a one-run dashboard, a comparison of runs, and a callback that draws the dashboard.

Everything here reads the trainer's log history (`TrainerState.log_history`, saved as `trainer_state.json` in every
checkpoint): a list of dicts, each with the optimizer `"step"` it was logged at. Only matplotlib is needed; figures are
plain `matplotlib.figure.Figure` objects rendered with the Agg canvas (no pyplot state, no display needed), so this
works on headless machines and inside training jobs.

```python
from dapo_trl.callbacks import DashboardCallback
from dapo_trl.plotting import plot_comparison, plot_dashboard

plot_dashboard("outputs/run-a", out_path="dashboard.png")  # six panels for one run
plot_comparison({"DAPO": "outputs/run-a", "GRPO": "outputs/run-b"}, out_path="comparison.png")
trainer = DAPOTrainer(..., callbacks=[DashboardCallback()])  # writes <output_dir>/dashboard.png when training ends
```

or from the shell: `dapo-trl plot outputs/run-a` / `dapo-trl plot outputs/run-a outputs/run-b -o comparison.png`.

Metrics used (names as logged by TRL's `GRPOTrainer` and by `DAPOTrainer`):

| panel | keys |
| --- | --- |
| policy loss | `policy_loss` (else `loss`) |
| entropy | `entropy` |
| reward | `reward`, every `rewards/<func>/mean`, `eval_reward` when evaluating |
| completion length | `completions/mean_length`, `completions/clipped_ratio` (share of truncated completions) |
| dynamic sampling | `dynamic_sampling/keep_rate`, `dynamic_sampling/rounds` |
| clipping | `clip_ratio/low_mean`, `clip_ratio/high_mean`, `clip_ratio/dual_mean` (with dual-clip) |

Generation metrics (`reward`, `completions/*`, `num_tokens`, `dynamic_sampling/*`) are logged only on the steps that
generate (every `steps_per_generation` steps); loss metrics every step. Each curve is drawn from the steps where its
key is present; a `None` or non-finite value is skipped.

`num_tokens` (the x axis of the bottom row of `plot_comparison`) is TRL's `state.num_input_tokens_seen`: at each
generation TRL adds the prompt tokens plus the completion tokens of every completion, summed over all processes
(prompts counted once per completion, without padding), in training only. It is cumulative, survives a resume (it is
part of the trainer state), and with dynamic sampling it counts every generation round, dropped groups included: it
measures rollout work, not the tokens trained on. Steps in between generations take the value of the last
generation.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, MaxNLocator


__all__ = ["load_history", "plot_comparison", "plot_dashboard"]  # and DashboardCallback, lazily (see __getattr__)

History = list[dict[str, Any]]
RunLike = str | os.PathLike[str] | Sequence[Mapping[str, Any]]

DEFAULT_DPI = 120
_STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_CLIP_KEYS = ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/dual_mean")
_NOTE_STYLE = dict(ha="center", va="center", fontsize=10, color="0.4", wrap=True)


# ----------------------------------------------------------------------------------------------------- loading


def find_trainer_state(run_dir: str | os.PathLike[str]) -> Path:
    """Path of the `trainer_state.json` that `load_history` reads for `run_dir`.

    `run_dir/trainer_state.json` if it exists (written by `trainer.save_state()` or when `run_dir` is a checkpoint),
    else the one of the latest `run_dir/checkpoint-N/` (highest `N`). `run_dir` may also be the JSON file itself.

    Raises:
        FileNotFoundError: `run_dir` does not exist, or holds no trainer state.
    """
    path = Path(run_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"Run folder {str(path)!r} does not exist.")
    if (path / _STATE_FILE).is_file():
        return path / _STATE_FILE
    checkpoints = []
    for child in path.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and (child / _STATE_FILE).is_file():
            checkpoints.append((int(match.group(1)), child / _STATE_FILE))
    if checkpoints:
        return max(checkpoints)[1]
    raise FileNotFoundError(
        f"No {_STATE_FILE} in {str(path)!r} nor in a checkpoint-*/ subfolder of it: is it a training output_dir? "
        "The trainer writes its state into each checkpoint (save_strategy != 'no'), or into output_dir with "
        "trainer.save_state()."
    )


def load_history(run_dir: str | os.PathLike[str]) -> History:
    """Log history (`TrainerState.log_history`) of a training run.

    Reads `run_dir/trainer_state.json`, else the `trainer_state.json` of the latest `run_dir/checkpoint-N/` (highest
    `N`). Entries are dicts with the optimizer `"step"` they were logged at and the logged values.

    Args:
        run_dir: a training `output_dir`, a `checkpoint-N` folder, or a `trainer_state.json` file.

    Returns:
        The list of logged dicts, in logging order.

    Raises:
        FileNotFoundError: with the folder's name, when it does not exist or holds no trainer state.

    Example:

    ```python
    >>> import json, os
    >>> os.makedirs("run/checkpoint-2", exist_ok=True)
    >>> state = {"log_history": [{"step": 1, "reward": 0.25}, {"step": 2, "reward": 0.5}]}
    >>> with open("run/checkpoint-2/trainer_state.json", "w") as f:
    ...     json.dump(state, f)
    >>> load_history("run")  # no run/trainer_state.json: falls back to the latest checkpoint
    [{'step': 1, 'reward': 0.25}, {'step': 2, 'reward': 0.5}]

    ```
    """
    path = find_trainer_state(run_dir)
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise ValueError(f"{str(path)!r} has no 'log_history' list: not a trainer_state.json?")
    return history


def _as_history(run: RunLike | Mapping[str, Any]) -> History:
    if isinstance(run, (str, os.PathLike)):
        return load_history(run)
    if isinstance(run, Mapping):  # a loaded trainer_state.json
        return list(run["log_history"])
    return list(run)


def _default_title(run: Any) -> str | None:
    if isinstance(run, (str, os.PathLike)):
        path = Path(run).resolve()
        return path.parent.name if _CHECKPOINT_RE.match(path.name) else path.name
    return None


# ----------------------------------------------------------------------------------------------------- series


def _value(entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _series(history: History, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key` over the entries where it is logged with a finite value."""
    steps, values = [], []
    for entry in history:
        value = _value(entry, key)
        if value is not None and _value(entry, "step") is not None:
            steps.append(entry["step"])
            values.append(value)
    return steps, values


def _has(history: History, key: str) -> bool:
    return any(_value(entry, key) is not None for entry in history)


def _reward_func_keys(history: History) -> list[str]:
    keys: dict[str, None] = {}
    for entry in history:
        for key in entry:
            if key.startswith("rewards/") and key.endswith("/mean"):
                keys[key] = None
    return list(keys)


def _tokens_at(history: History) -> Any:
    """Function step -> cumulative `num_tokens` at that step (last logged value at or before it), or None."""
    steps, tokens = _series(history, "num_tokens")
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    steps, tokens = [steps[i] for i in order], [tokens[i] for i in order]

    def lookup(step: float) -> float | None:
        i = bisect.bisect_right(steps, step)
        return tokens[i - 1] if i else None

    return lookup if steps else None


def _by_tokens(lookup: Any, steps: Sequence[float], values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Re-index a per-step series by cumulative rollout tokens.

    Every step of one generation batch has the same token count: their values are averaged into one point (no
    vertical runs of points); steps before the first logged `num_tokens` are dropped.
    """
    groups: dict[float, list[float]] = {}
    for step, value in zip(steps, values):
        tokens = lookup(step)
        if tokens is not None:
            groups.setdefault(tokens, []).append(value)
    xs = sorted(groups)
    return xs, [sum(groups[x]) / len(groups[x]) for x in xs]


# ----------------------------------------------------------------------------------------------------- drawing


def _new_figure(nrows: int, ncols: int, figsize: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _line(ax: Axes, xs: Sequence[float], ys: Sequence[float], **style: Any) -> Any:
    style.setdefault("linewidth", 1.6)
    if len(xs) <= 40:  # sparse curves (generation metrics, short runs): show the points
        style.setdefault("marker", "o")
        style.setdefault("markersize", 3.5)
    return ax.plot(xs, ys, **style)[0]


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, **_NOTE_STYLE)
    ax.set_xticks([])
    ax.set_yticks([])


def _missing_note(names: Iterable[str]) -> str:
    return "not logged:\n" + "\n".join(names)


def _percent(value: float, _position: Any = None) -> str:
    """Tick label of a fraction in percent, with the digits it needs: 0%, 0.05%, 12.5%, 100%."""
    return "0%" if abs(value) < 1e-12 else f"{value * 100:.4g}%"


def _fraction_axis(ax: Axes, values: Sequence[float], full: bool) -> None:
    """Fractions shown in percent: 0-100% (`full`), else 0 to a bit above the largest value."""
    top = 1.05 if full else (max(values, default=0.0) * 1.15 or 0.01)
    ax.set_ylim(-0.02 * top, top)  # zeros drawn just above the axis line, not on it
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))


def _legend_above(ax: Axes, handles: list[Any], title_ax: Axes) -> None:
    """Legend in one or two rows between the panel's title and its frame: it never covers a curve."""
    labels = [h.get_label() for h in handles]
    ncol = min(len(handles), 3 if sum(map(len, labels)) <= 60 else 2)
    rows = -(-len(handles) // ncol)
    ax.legend(
        handles=handles,
        labels=labels,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=ncol,
        fontsize=8,
        frameon=False,
        borderaxespad=0.2,
        handlelength=2.5,
    )
    title_ax.set_title(title_ax.get_title(), fontsize=11, fontweight="bold", pad=6 + 12 * rows)


def _finish_axes(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, fontweight="bold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def _draw_panel(
    ax: Axes,
    history: History,
    *,
    title: str,
    ylabel: str,
    curves: Sequence[tuple[str, str] | tuple[str, str, dict[str, Any]]],
    required: Sequence[str | tuple[str, ...]],
    twin: tuple[str, str, str] | None = None,
    fraction: str | None = None,
    twin_fraction: bool = False,
    twin_integer: bool = False,
) -> list[str]:
    """Draw `curves` ((key, label[, line style]), skipped when not logged) and an optional `twin` (key, label,
    ylabel) curve.

    Returns the names of `required` metrics that are not logged; alternatives (a tuple) need one of them.
    """
    xlabel = "optimizer step"
    missing = []
    for names in required:
        names = (names,) if isinstance(names, str) else names
        if not any(_has(history, name) for name in names):
            missing.append(" or ".join(names))
    present = [(curve[0], curve[1], curve[2] if len(curve) > 2 else {}) for curve in curves if _has(history, curve[0])]
    twin_present = twin is not None and _has(history, twin[0])
    _finish_axes(ax, title, xlabel, ylabel)
    if not present and not twin_present:
        wanted = [" or ".join(n) if isinstance(n, tuple) else n for n in required]
        _note(ax, _missing_note(wanted))
        return missing

    handles, all_values = [], []
    for i, (key, label, style) in enumerate(present):
        xs, ys = _series(history, key)
        all_values += ys
        handles.append(_line(ax, xs, ys, label=label, **{"color": f"C{i}", **style}))
    if fraction is not None:
        _fraction_axis(ax, all_values, full=fraction == "full")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    if twin_present:
        key, label, twin_ylabel = twin
        color = "C3"
        tax = ax.twinx()
        xs, ys = _series(history, key)
        handles.append(_line(tax, xs, ys, label=label, color=color, linestyle="--"))
        tax.set_ylabel(twin_ylabel, color=color)
        tax.tick_params(axis="y", colors=color)
        if twin_fraction:
            _fraction_axis(tax, ys, full=True)
        if twin_integer:
            tax.yaxis.set_major_locator(MaxNLocator(integer=True))
            tax.set_ylim(0, max(ys) * 1.15 + 0.5)
        legend_ax = tax  # on top of both axes' lines
    else:
        legend_ax = ax
    if missing:  # some curves of this panel are there, others not
        ax.text(0.99, 0.01, "not logged: " + ", ".join(missing), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color="0.4")  # fmt: skip
    if len(handles) > 1:  # one curve: the title says what it is
        _legend_above(legend_ax, handles, ax)
    return missing


def _save(fig: Figure, out_path: str | os.PathLike[str] | None, dpi: int) -> None:
    if out_path is None:
        return
    parent = os.path.dirname(os.fspath(out_path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)


def _warn_missing(what: str, missing: Sequence[str]) -> None:
    if missing:
        warnings.warn(f"{what}: metrics not logged, skipped: {', '.join(missing)}", UserWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------------- dashboard


def plot_dashboard(
    run_dir_or_history: RunLike,
    out_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> Figure:
    """Six-panel dashboard of one run, against the optimizer step.

    Panels: (a) policy loss (`policy_loss`, else `loss`), (b) entropy, (c) reward (`reward`, each
    `rewards/<func>/mean`, and `eval_reward` when evaluating), (d) mean completion length with the share of
    truncated completions on a twin axis, (e) dynamic sampling: keep rate and generation rounds per step (twin axis),
    (f) fraction of tokens clipped low / high (and by the dual clip when on). A panel whose metrics were not logged
    shows "not logged: <names>"; a `UserWarning` lists every skipped metric.

    Args:
        run_dir_or_history: a run folder (see `load_history`) or a log history (list of dicts with `"step"`).
        out_path: write the figure there as PNG (parent folders created) when given.
        title: figure title; defaults to the run folder's name.
        dpi: resolution of the saved PNG.

    Returns:
        The `matplotlib.figure.Figure` (Agg canvas; shows inline in Jupyter).

    Example:

    ```python
    >>> history = [
    ...     {"step": 1, "policy_loss": 0.02, "entropy": 1.9, "reward": 0.30, "completions/mean_length": 210.0},
    ...     {"step": 2, "policy_loss": -0.01, "entropy": 1.8, "reward": 0.45, "completions/mean_length": 190.0},
    ... ]
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     fig = plot_dashboard(history, out_path="dashboard.png", title="my run")
    >>> len(fig.axes) >= 6
    True
    >>> print(caught[0].message)  # doctest: +ELLIPSIS
    plot_dashboard: metrics not logged, skipped: completions/clipped_ratio, dynamic_sampling/keep_rate, ...

    ```
    """
    history = _as_history(run_dir_or_history)
    title = title or _default_title(run_dir_or_history) or "training run"
    fig, axes = _new_figure(2, 3, figsize=(16, 9))
    (ax_loss, ax_entropy, ax_reward), (ax_length, ax_sampling, ax_clip) = axes
    missing: list[str] = []

    # `policy_loss` (the clipped surrogate alone) unless `loss` (what was optimized, with the KL term) covers more steps
    policy_steps, loss_steps = len(_series(history, "policy_loss")[0]), len(_series(history, "loss")[0])
    loss_curve = ("policy_loss", "policy loss") if policy_steps and policy_steps >= loss_steps else ("loss", "loss")
    missing += _draw_panel(
        ax_loss,
        history,
        title="(a) Policy loss",
        ylabel=f"{loss_curve[0]} (per token)",
        curves=[loss_curve],
        required=[("policy_loss", "loss")],
    )
    missing += _draw_panel(
        ax_entropy,
        history,
        title="(b) Policy entropy",
        ylabel="entropy (nats / token)",
        curves=[("entropy", "entropy")],
        required=["entropy"],
    )
    func_keys = _reward_func_keys(history)
    if len(func_keys) == 1 and _series(history, func_keys[0]) == _series(history, "reward"):
        # one reward function, weight 1: its curve is the reward's, drawn once
        reward_curves = [("reward", f"reward ({func_keys[0][len('rewards/') : -len('/mean')]})")]
    else:
        reward_curves = [("reward", "reward (weighted sum)", {"linewidth": 2.2})]
        reward_curves += [
            (key, key[len("rewards/") : -len("/mean")], {"linestyle": "--", "linewidth": 1.2}) for key in func_keys
        ]
    reward_curves += [("eval_reward", "eval reward", {"linestyle": ":", "marker": "s"})]
    missing += _draw_panel(
        ax_reward,
        history,
        title="(c) Reward / accuracy",
        ylabel="mean reward per completion",
        curves=reward_curves,
        required=["reward"],
    )
    missing += _draw_panel(
        ax_length,
        history,
        title="(d) Completion length",
        ylabel="mean completion length (tokens)",
        curves=[("completions/mean_length", "mean length")],
        required=["completions/mean_length", "completions/clipped_ratio"],
        twin=("completions/clipped_ratio", "truncated share", "truncated completions (%)"),
        twin_fraction=True,
    )
    missing += _draw_panel(
        ax_sampling,
        history,
        title="(e) Dynamic sampling",
        ylabel="groups kept (% of generated)",
        curves=[("dynamic_sampling/keep_rate", "keep rate")],
        required=["dynamic_sampling/keep_rate", "dynamic_sampling/rounds"],
        twin=("dynamic_sampling/rounds", "generation rounds", "generation rounds per batch"),
        fraction="full",
        twin_integer=True,
    )
    missing += _draw_panel(
        ax_clip,
        history,
        title="(f) Clipped tokens",
        ylabel="tokens clipped (% of loss tokens)",
        curves=[
            ("clip_ratio/low_mean", "low (r < 1-ε, A<0)", {"marker": "v"}),
            ("clip_ratio/high_mean", "high (r > 1+ε_high, A>0)", {"marker": "^", "linestyle": "--"}),
            ("clip_ratio/dual_mean", "dual clip (A<0)", {"marker": "s", "linestyle": ":"}),
        ],
        required=["clip_ratio/low_mean", "clip_ratio/high_mean"],
        fraction="auto",
    )
    clip_values = [v for key in _CLIP_KEYS for v in _series(history, key)[1]]
    if clip_values and not any(clip_values):
        ax_clip.text(0.5, 0.55, "no token clipped:\nthe ratio stayed in [1-ε, 1+ε_high]\n(always so with one update\nper generation batch)",
                     transform=ax_clip.transAxes, **_NOTE_STYLE)  # fmt: skip
    steps = [s for s in (_value(e, "step") for e in history) if s is not None]
    span = f"  (steps {int(min(steps))}-{int(max(steps))})" if steps else "  (empty log history)"
    fig.suptitle(title + span, fontsize=14, fontweight="bold")
    _warn_missing("plot_dashboard", missing)
    _save(fig, out_path, dpi)
    return fig


# ----------------------------------------------------------------------------------------------------- comparison


def _run_labels(runs: Sequence[Any]) -> list[str]:
    labels = []
    for i, run in enumerate(runs):
        if isinstance(run, (str, os.PathLike)):
            labels.append(Path(run).resolve().parts)
        else:
            labels.append((f"run {i + 1}",))
    # shortest unique suffix of the path: "a/out" and "b/out" become "a/out" and "b/out", not "out" twice
    for depth in range(1, max(len(parts) for parts in labels) + 1):
        names = ["/".join(parts[-depth:]) for parts in labels]
        if len(set(names)) == len(names):
            return names
    return [f"{'/'.join(parts)} ({i + 1})" for i, parts in enumerate(labels)]


def plot_comparison(
    runs: Mapping[str, RunLike] | Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    dpi: int = DEFAULT_DPI,
) -> Figure:
    """Several runs on the same axes: reward, entropy and mean completion length.

    Top row against the optimizer step, bottom row against the cumulative `num_tokens` (rollout tokens, prompt +
    completion, all generation rounds: see the module docstring). Metrics a run did not log are skipped for that run,
    with a note in the panel and a `UserWarning`.

    Args:
        runs: `{label: run folder or log history}`, or a list of run folders (labelled by their folder names, with
            parent folders added until the labels differ).
        out_path: write the figure there as PNG when given.
        title: figure title.
        dpi: resolution of the saved PNG.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    ```python
    >>> def history(slope):
    ...     return [{"step": s, "reward": slope * s, "entropy": 2 - 0.1 * s, "completions/mean_length": 100 + 5 * s,
    ...              "num_tokens": 1000 * s} for s in range(1, 6)]
    >>> fig = plot_comparison({"DAPO": history(0.1), "GRPO": history(0.05)}, out_path="comparison.png")
    >>> [ax.get_title() for ax in fig.axes[:3]]
    ['Reward / accuracy', 'Policy entropy', 'Mean completion length']

    ```
    """
    if isinstance(runs, Mapping):
        labels, sources = [str(label) for label in runs], list(runs.values())
    else:
        sources = list(runs)
        labels = _run_labels(sources)
    if not sources:
        raise ValueError("plot_comparison needs at least one run.")
    histories = [_as_history(source) for source in sources]

    metrics = [
        ("reward", "Reward / accuracy", "mean reward per completion"),
        ("entropy", "Policy entropy", "entropy (nats / token)"),
        ("completions/mean_length", "Mean completion length", "tokens"),
    ]
    fig, axes = _new_figure(2, len(metrics), figsize=(16, 9))
    handles: dict[str, Any] = {}
    warned: list[str] = []
    token_lookups = [_tokens_at(history) for history in histories]
    for col, (key, name, ylabel) in enumerate(metrics):
        for row, xlabel in enumerate(["optimizer step", "rollout tokens (prompt + completion, cumulative)"]):
            ax = axes[row][col]
            _finish_axes(ax, name, xlabel, ylabel)
            skipped = []
            for i, (label, history) in enumerate(zip(labels, histories)):
                steps, values = _series(history, key)
                if not steps:
                    skipped.append(f"{label}: {key}")
                    continue
                if row == 1:
                    lookup = token_lookups[i]
                    if lookup is None:
                        skipped.append(f"{label}: num_tokens")
                        continue
                    steps, values = _by_tokens(lookup, steps, values)
                style = {"color": f"C{i % 10}", "linestyle": ["-", "--", ":", "-."][i // 10 % 4]}
                handles[label] = _line(ax, steps, values, label=label, **style)
            if len(skipped) == len(histories):
                _note(ax, _missing_note(skipped))
            elif skipped:
                ax.text(0.99, 0.01, "not logged: " + ", ".join(skipped), transform=ax.transAxes, ha="right",
                        va="bottom", fontsize=7, color="0.4")  # fmt: skip
            if row == 0:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            else:
                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            warned += [s for s in skipped if s not in warned]
    fig.legend(
        handles=[handles[label] for label in labels if label in handles],
        labels=[label for label in labels if label in handles],
        loc="outside lower center",
        ncol=min(len(labels), 5),
        fontsize=11,
        frameon=False,
    )
    fig.suptitle(title or f"Comparison of {len(labels)} runs", fontsize=14, fontweight="bold")
    _warn_missing("plot_comparison", warned)
    _save(fig, out_path, dpi)
    return fig


def __getattr__(name: str) -> Any:
    # `DashboardCallback` lives in `dapo_trl.callbacks` (it needs transformers); kept importable from here lazily so that
    # this module, and `dapo-trl plot`, import matplotlib only.
    if name == "DashboardCallback":
        from .callbacks import DashboardCallback

        return DashboardCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
