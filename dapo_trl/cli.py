"""The `dapo-trl` command.

```bash
dapo-trl plot outputs/run-a                      # dashboard -> outputs/run-a/dashboard.png
dapo-trl plot outputs/run-a outputs/run-b        # comparison -> ./comparison.png
dapo-trl plot outputs/run-a -o a.png --title "DAPO, 0.5B"
```
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence


_PLOT_EPILOG = """\
A run folder is a training output_dir: its trainer_state.json is read, else the one of its latest checkpoint-N/
(the trainer writes it with every checkpoint). A checkpoint folder or a trainer_state.json file works too.

One run: six-panel dashboard (policy loss, entropy, reward, completion length and truncated share, dynamic sampling
keep rate and rounds, clipped-token fractions), written to RUN_DIR/dashboard.png by default.
Several runs: reward, entropy and completion length of every run against optimizer steps and against rollout tokens
(TRL's cumulative num_tokens), written to ./comparison.png by default.

examples:
  dapo-trl plot outputs/run-a
  dapo-trl plot outputs/dapo outputs/grpo -o compare.png --title "DAPO vs GRPO"
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dapo-trl",
        description="Tools for dapo-trl training runs (DAPO on top of TRL).",
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    plot = subcommands.add_parser(
        "plot",
        help="plot a run's metrics (dashboard) or compare several runs",
        description="Plot the logged metrics of one training run (dashboard) or compare several runs.",
        epilog=_PLOT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training output folder(s)")
    plot.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="PNG to write (default: RUN_DIR/dashboard.png for one run, ./comparison.png for several)",
    )
    plot.add_argument("--title", metavar="T", help="figure title (default: the run folder's name)")
    plot.add_argument("--dpi", type=int, default=120, help="resolution of the PNG (default: %(default)s)")
    return parser


def _plot(args: argparse.Namespace) -> int:
    from .plotting import find_trainer_state, plot_comparison, plot_dashboard  # matplotlib only when plotting

    for run_dir in args.run_dirs:
        try:
            find_trainer_state(run_dir)
        except FileNotFoundError as error:
            print(f"dapo-trl plot: error: {error}", file=sys.stderr)
            return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if len(args.run_dirs) == 1:
            out = args.output or os.path.join(args.run_dirs[0], "dashboard.png")
            if os.path.isfile(args.run_dirs[0]) and not args.output:  # a trainer_state.json: next to it
                out = os.path.join(os.path.dirname(args.run_dirs[0]), "dashboard.png")
            plot_dashboard(args.run_dirs[0], out_path=out, title=args.title, dpi=args.dpi)
        else:
            out = args.output or "comparison.png"
            plot_comparison(args.run_dirs, out_path=out, title=args.title, dpi=args.dpi)
    for warning in caught:
        print(f"dapo-trl plot: note: {warning.message}", file=sys.stderr)
    print(out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dapo-trl` console script; returns the exit code.

    Args:
        argv: command-line arguments without the program name (default: `sys.argv[1:]`).

    Returns:
        0 on success, 2 when a run folder holds no trainer state (argparse also exits with 2 on usage errors).

    Example:

    ```python
    from dapo_trl.cli import main

    main(["plot", "outputs/run-a"])  # prints outputs/run-a/dashboard.png
    ```
    """
    args = _build_parser().parse_args(argv)
    if args.command == "plot":
        return _plot(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse only accepts known subcommands


if __name__ == "__main__":
    sys.exit(main())
