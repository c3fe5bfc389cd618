"""Shared reporting for the benchmark scripts: run metadata, report header, JSON results, formatters, statistics.

Every benchmark script keeps only its experiment and its own tables; this module holds what they all need:

- `machine_meta()`: where and when a run happened (CPU, platform, Python, torch threads, load average, UTC time,
  package versions, git commit), stored in the results JSON under `"meta"`;
- `header_lines(title, meta, command, wall_seconds)`: the Markdown header of a report, from that metadata
  (`results_header(title, payload)` takes them from a results payload: `meta`, `command`, `wall_seconds`);
- `write_results` / `read_results`: the raw results as JSON; `write_report` writes the JSON and renders the Markdown
  *from the JSON read back*, so `render_from_json` (a script's `--render JSON`) reproduces the report exactly;
- `md_table` and the formatters `num`, `pct`, `ratio`, `kfmt`, `fmt_ms`, `spread`, `med_range`, `fmt_ci`;
- `median_ci` and `paired_diffs`: medians with percentile-bootstrap intervals, missing values dropped and counted.

The scripts are run as files (`python benchmarks/x.py`), so `benchmarks/` is on `sys.path` and they simply
`import reporting`. Only the standard library is needed; package versions are read without importing the packages.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "trl", "accelerate", "dapo_trl", "deepspeed")
Format = str | Callable[[float], str]  # a format spec such as ".3f" or ".0%", or a function of the value


# ---------------------------------------------------------------------------------------------------------- metadata


def load_average() -> str | None:
    """The 1, 5 and 15 minute load averages as one string, `None` where the platform has none.

    >>> text = load_average()
    >>> text is None or len(text.split()) == 3
    True
    """
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else `platform.processor()`, else the machine type (`x86_64`)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed version of each package, `"not installed"` if absent; packages are not imported for this.

    A package already imported (the scripts import what they measure) reports its module's `__version__`, which is
    the code that actually ran; `dapo_trl` is always taken from the module on the path (a cheap, lazy import).

    >>> package_versions(["surely-not-a-package"])
    {'surely-not-a-package': 'not installed'}
    """
    out = {}
    for name in names:
        module = sys.modules.get(name)
        if module is None and name == "dapo_trl":
            try:
                import dapo_trl as module
            except ImportError:
                module = None
        if getattr(module, "__version__", None):
            out[name] = str(module.__version__)
            continue
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: str | os.PathLike = ROOT) -> str | None:
    """Short commit of the checkout at `path`, marked `+dirty` with uncommitted changes; `None` outside git."""
    try:
        run = {"cwd": path, "capture_output": True, "text": True, "timeout": 10, "check": True}
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def machine_meta() -> dict[str, Any]:
    """Where and when this run happens, as JSON-ready values (stored under `"meta"` in the results).

    `torch_threads` is read only if torch is already imported (else `None`); a script whose measured work runs in
    child processes should overwrite it with the children's value.

    >>> meta = machine_meta()
    >>> sorted(meta)  # doctest: +NORMALIZE_WHITESPACE
    ['cpu', 'cpus', 'date', 'git_commit', 'loadavg', 'machine', 'platform', 'python', 'torch_threads',
     'versions']
    >>> meta["date"].endswith("UTC"), meta["python"] == platform.python_version()
    (True, True)
    """
    torch = sys.modules.get("torch")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads() if hasattr(torch, "get_num_threads") else None,
        "loadavg": load_average(),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }


def command_line(script: str, argv: Sequence[str] | None = None, hide: Sequence[str] = ()) -> str:
    """The command that ran `script`, as one would type it from the repository root.

    `argv` defaults to `sys.argv[1:]`; the values of the options in `hide` (local paths, say) are shown as `...`.

    >>> command_line(str(ROOT / "benchmarks" / "x.py"), ["--quick", "--previous", "/home/me/v0"], hide=["--previous"])
    'python benchmarks/x.py --quick --previous ...'
    >>> command_line("benchmarks/x.py", ["--out=/tmp/a b.md"])
    "python benchmarks/x.py '--out=/tmp/a b.md'"
    """
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if i and args[i - 1] in hide:
            args[i] = "..."
        elif arg.split("=", 1)[0] in hide and "=" in arg:
            args[i] = arg.split("=", 1)[0] + "=..."
    path = Path(script).resolve()
    shown = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else script
    return shlex.join(["python", shown, *args])


def header_lines(title: str, meta: dict[str, Any], command: str, wall_seconds: float | None = None) -> list[str]:
    """The Markdown header of a report: title, date, wall time, command, machine and versions.

    Keys missing from `meta` (results written by an older script) are left out. An optional `meta["loadavg_end"]`
    is shown next to the load average at the start.

    >>> meta = {"date": "2026-01-02 03:04 UTC", "cpus": 2, "cpu": "AMD EPYC", "platform": "Linux-6.1-x86_64",
    ...         "python": "3.11.7", "torch_threads": 1, "loadavg": "1.00 0.50 0.25", "git_commit": "abc1234",
    ...         "versions": {"torch": "2.5.0", "trl": "1.16.0"}}
    >>> print("\\n".join(header_lines("Demo", meta, "python benchmarks/demo.py --quick", 62.4)))
    # Demo
    <BLANKLINE>
    Generated on 2026-01-02 03:04 UTC (total wall time 62 s) by:
    <BLANKLINE>
    ```
    python benchmarks/demo.py --quick
    ```
    <BLANKLINE>
    - Machine: 2 CPUs (AMD EPYC), Linux-6.1-x86_64, Python 3.11.7, torch threads 1; load average (1/5/15 min) 1.00 0.50 0.25 at the start.
    - Versions: torch 2.5.0, trl 1.16.0; git commit abc1234.
    <BLANKLINE>
    """
    wall = f" (total wall time {wall_seconds:.0f} s)" if wall_seconds is not None else ""
    machine = [f"{meta['cpus']} CPUs" + (f" ({meta['cpu']})" if meta.get("cpu") else "")] if "cpus" in meta else []
    machine.append(meta.get("platform") or meta.get("machine") or "platform not recorded")
    if meta.get("python"):
        machine.append(f"Python {meta['python']}")
    if meta.get("torch_threads") is not None:
        machine.append(f"torch threads {meta['torch_threads']}")
    load = ""
    if meta.get("loadavg"):
        load = f"; load average (1/5/15 min) {meta['loadavg']} at the start"
        load += f", {meta['loadavg_end']} at the end" if meta.get("loadavg_end") else ""
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()) or "not recorded"
    commit = f"; git commit {meta['git_commit']}" if meta.get("git_commit") else ""
    return [
        f"# {title}",
        "",
        f"Generated on {meta.get('date', 'an unrecorded date')}{wall} by:",
        "",
        "```",
        command,
        "```",
        "",
        f"- Machine: {', '.join(machine)}{load}.",
        f"- Versions: {versions}{commit}.",
        "",
    ]


def results_header(title: str, payload: dict[str, Any]) -> list[str]:
    """`header_lines` from a results payload laid out as the scripts write it: `meta`, `command`, `wall_seconds`.

    >>> results_header("Demo", {"meta": {"date": "today"}, "command": "python x.py", "wall_seconds": 5})[2]
    'Generated on today (total wall time 5 s) by:'
    """
    return header_lines(title, payload["meta"], payload["command"], payload.get("wall_seconds"))


# ---------------------------------------------------------------------------------------------------------- results


def write_results(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write a run's raw results as JSON; `payload["meta"]` is filled with `machine_meta()` when missing.

    NaN is written as the (non-standard) `NaN` token that Python's `json` reads back.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_results(Path(tmp) / "r.json", {"meta": {"date": "today"}, "x": [1.5, float("nan")]})
    ...     read_results(path)
    {'meta': {'date': 'today'}, 'x': [1.5, nan]}
    """
    payload = payload if "meta" in payload else {"meta": machine_meta(), **payload}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read results written by `write_results`; a file without `"meta"` is not one of them (`ValueError`)."""
    payload = json.loads(Path(path).read_text())
    if not isinstance(payload, dict) or "meta" not in payload:
        raise ValueError(f"{path}: not a benchmark results file (no 'meta')")
    return payload


def write_report(md_path: str | os.PathLike, payload: dict[str, Any], render: Callable[[dict], str]) -> str:
    """Write `payload` to the JSON next to `md_path`, then the Markdown rendered from that JSON; return the text.

    Rendering from the file read back (not from the live objects) means `render_from_json` gives the same report.
    """
    md_path = Path(md_path)
    json_path = write_results(md_path.with_suffix(".json"), payload)
    text = render(read_results(json_path))
    md_path.write_text(text)
    return text


def render_from_json(
    json_path: str | os.PathLike, render: Callable[[dict], str], out: str | os.PathLike | None = None
) -> Path:
    """Re-render a report from its results JSON (a script's `--render`); `out` defaults to the JSON's `.md` twin."""
    out = Path(out) if out is not None else Path(json_path).with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(read_results(json_path)))
    return out


# ---------------------------------------------------------------------------------------------------------- formatting


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | Sequence[str] | None = None) -> str:
    """A Markdown table; `align` gives one of `l`, `r`, `c` per column (default: no alignment marker).

    Cells are `str()`-ed as they are (no escaping: they may hold Markdown).

    >>> print(md_table(["name", "n"], [["a", 1], ["b", 22]], align="lr"))
    | name | n |
    | --- | ---: |
    | a | 1 |
    | b | 22 |
    """
    marks = {"l": "---", "r": "---:", "c": ":---:", None: "---"}
    align = [None] * len(headers) if align is None else list(align)
    if len(align) != len(headers) or any(a not in marks for a in align):
        raise ValueError(f"align {align!r}: need one of 'l', 'r', 'c' for each of {len(headers)} columns")
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} columns")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def is_missing(x: Any) -> bool:
    """`None` or NaN.

    >>> is_missing(None), is_missing(float("nan")), is_missing(0.0)
    (True, True, False)
    """
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x: float | None, fmt: Format = ".3f") -> str:
    """`x` formatted with a format spec or function; `"n/a"` for `None` and NaN.

    >>> num(0.12345), num(0.5, ".0%"), num(None), num(2.0, lambda v: f"{v:g} s")
    ('0.123', '50%', 'n/a', '2 s')
    """
    if is_missing(x):
        return "n/a"
    return fmt(x) if callable(fmt) else format(x, fmt)


def pct(x: float | None, digits: int = 0, signed: bool = False) -> str:
    """A fraction as a percentage (`signed`: always with its sign, for changes).

    >>> pct(0.25), pct(0.0342, 1), pct(0.68, signed=True), pct(-0.05, signed=True), pct(None)
    ('25%', '3.4%', '+68%', '-5%', 'n/a')
    """
    return num(x, f"{'+' if signed else ''}.{digits}%")


def ratio(x: float | None, digits: int = 2) -> str:
    """A ratio with an `x` suffix.

    >>> ratio(0.9123), ratio(11.736, 1), ratio(float("nan"))
    ('0.91x', '11.7x', 'n/a')
    """
    return num(x, lambda v: f"{v:.{digits}f}x")


def safe_div(a: float, b: float) -> float:
    """`a / b`, NaN when `b` is 0 (an empty denominator).

    >>> safe_div(3, 4), safe_div(1, 0)
    (0.75, nan)
    """
    return a / b if b else math.nan


def kfmt(n: float | None, digits: int = 1) -> str:
    """A count with a k / M / G suffix from 1,000 on.

    >>> kfmt(950), kfmt(1234), kfmt(2_500_000), kfmt(-12_000, 0), kfmt(3.2e9), kfmt(None)
    ('950', '1.2k', '2.5M', '-12k', '3.2G', 'n/a')
    """
    if is_missing(n):
        return "n/a"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.{digits}f}{suffix}"
    return f"{n:g}"


def fmt_ms(seconds: float | None) -> str:
    """Seconds as milliseconds: one decimal from 10 ms on, two below.

    >>> fmt_ms(0.04661), fmt_ms(0.00123), fmt_ms(None)
    ('46.6', '1.23', 'n/a')
    """
    return num(seconds, lambda s: f"{s * 1000:.1f}" if abs(s * 1000) >= 10 else f"{s * 1000:.2f}")


def spread(values: Iterable[float | None], fmt: Format = ".3f", sep: str = " / ") -> str:
    """`min / max` of the values present (missing ones dropped); `"n/a"` when none is.

    >>> spread([1.078, 0.947, 0.99]), spread([3, None, 1], ".0f", "-"), spread([])
    ('0.947 / 1.078', '1-3', 'n/a')
    """
    present = [v for v in values if not is_missing(v)]
    return f"{num(min(present), fmt)}{sep}{num(max(present), fmt)}" if present else "n/a"


def med_range(values: Iterable[float | None], fmt: Format = ".3g") -> str:
    """`median (min - max)` of the values present, then how many were missing, if any.

    >>> med_range([3, 1, 2]), med_range([0.5, None], ".2f"), med_range([None])
    ('2 (1 - 3)', '0.50; 1 missing', 'n/a; 1 missing')
    """
    values = list(values)
    present = [v for v in values if not is_missing(v)]
    text = num(statistics.median(present), fmt) if present else "n/a"
    if len(present) > 1:
        text += f" ({spread(present, fmt, ' - ')})"
    missing = len(values) - len(present)
    return text + (f"; {missing} missing" if missing else "")


def fmt_ci(median: float | None, lo: float | None, hi: float | None, fmt: Format = ".3f") -> str:
    """`median [lo, hi]`; the bracket is left out when there is no interval (one value), `"n/a"` for no median.

    >>> fmt_ci(1.5, 1.2, 1.9, ".2f"), fmt_ci(0.25, 0.2, 0.3, ".0%"), fmt_ci(1.5, None, None), fmt_ci(None, 1, 2)
    ('1.50 [1.20, 1.90]', '25% [20%, 30%]', '1.500', 'n/a')
    """
    if is_missing(median):
        return "n/a"
    if is_missing(lo) or is_missing(hi):
        return num(median, fmt)
    return f"{num(median, fmt)} [{num(lo, fmt)}, {num(hi, fmt)}]"


# ---------------------------------------------------------------------------------------------------------- statistics


class Interval(NamedTuple):
    """A median with its bootstrap interval over `n` values; `missing` values (None / NaN) were dropped first."""

    median: float
    lo: float
    hi: float
    n: int
    missing: int


class PairedDiffs(NamedTuple):
    """Per-pair differences `b - a` (NaN where a side is missing) and the `Interval` of the ones present."""

    diffs: list[float]
    median: float
    lo: float
    hi: float
    n: int
    missing: int


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The `q` quantile of already sorted values, linear between order statistics (numpy's default).

    >>> quantile([1, 2, 3, 4], 0.5), quantile([1, 2, 3, 4], 0.0), quantile([10, 20], 0.25)
    (2.5, 1.0, 12.5)
    """
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low))


def median_ci(values: Iterable[float | None], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Median with a percentile-bootstrap interval: the `(1 - level) / 2` and `(1 + level) / 2` quantiles of the
    medians of `n_boot` resamples (with replacement, seeded: the same input gives the same interval).

    `None` and NaN are dropped and counted in `missing`. One value gives no interval (`lo`, `hi` NaN), none gives
    a NaN median too.

    >>> median_ci([2.0, 2.0, 2.0])
    Interval(median=2.0, lo=2.0, hi=2.0, n=3, missing=0)
    >>> ci = median_ci([1, 2, 3, 4, 5, 6, 7, 8, 9, None, float("nan")])
    >>> ci.median, ci.lo <= ci.median <= ci.hi, ci.n, ci.missing
    (5, True, 9, 2)
    """
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1, got level={level}, n_boot={n_boot}")
    values = list(values)
    present = [v for v in values if not is_missing(v)]
    missing = len(values) - len(present)
    if not present:
        return Interval(math.nan, math.nan, math.nan, 0, missing)
    median = statistics.median(present)
    if len(present) == 1:
        return Interval(median, math.nan, math.nan, 1, missing)
    rng = random.Random(seed)
    boots = sorted(statistics.median(rng.choices(present, k=len(present))) for _ in range(n_boot))
    tail = (1 - level) / 2
    return Interval(median, quantile(boots, tail), quantile(boots, 1 - tail), len(present), missing)


def paired_diffs(
    a: Sequence[float | None], b: Sequence[float | None], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> PairedDiffs:
    """Differences `b[i] - a[i]` of paired runs (same seed `i`), with their median and bootstrap interval.

    A pair with a missing side (None / NaN) gives a NaN difference, left out of the interval and counted in `missing`.

    >>> d = paired_diffs([1.0, 2.0, 3.0, None], [1.5, 2.5, 3.5, 4.0])
    >>> d.diffs, d.median, d.lo, d.hi, d.n, d.missing
    ([0.5, 0.5, 0.5, nan], 0.5, 0.5, 0.5, 3, 1)
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need the same length, got {len(a)} and {len(b)}")
    diffs = [math.nan if is_missing(x) or is_missing(y) else y - x for x, y in zip(a, b)]
    return PairedDiffs(diffs, *median_ci(diffs, n_boot=n_boot, seed=seed, level=level))
