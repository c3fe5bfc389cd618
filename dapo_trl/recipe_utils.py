"""What every dapo-trl recipe script shares: its parser, one-line errors, the offline Hub check and a quiet console.

```python
from dapo_trl import DAPOConfig
from dapo_trl.recipe_utils import RecipeParser, check_hub_inputs, quiet_third_party_logs, use_compact_console
from trl import ModelConfig

parser = RecipeParser((ScriptArguments, DAPOConfig, ModelConfig), prog="my_recipe.py", common=("max_steps",))
script_args, training_args, model_args = parser.parse_args_and_config()  # bad values: one line, exit status 2
online = check_hub_inputs(model_args.model_name_or_path, script_args.dataset_name, prog=parser.prog,
                          hint="python recipes/gsm8k.py --preset tiny")  # offline and not cached: one line, exit 2
trainer = DAPOTrainer(...)
use_compact_console(trainer)  # one short line per logging step
```

- [`RecipeParser`] (a `TrlParser`): `--help` shows the recipe's options, DAPO's options and the common training
  options, each in its own group; TRL's and transformers' other options stay accepted and are listed by `--help-all`.
  Argument and configuration errors (argparse's, `DAPOConfig`'s `ValueError`s, transformers' checks, unknown
  options, a bad `--config` file) print `PROG: error: <message>` naming the option, with no traceback and no usage
  block, and exit with status 2.
- [`check_hub_inputs`]: before anything heavy is loaded, exits with one message naming the model or dataset id when
  the Hub is unreachable and it is not in the local cache.
- [`fail`]: that one-line exit, for a recipe's own checks.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import difflib
import logging
import os
import re
import socket
import sys
from collections.abc import Iterable, Sequence
from urllib.parse import urlparse

import yaml
from transformers import TrainingArguments
from trl import GRPOConfig, ModelConfig, TrlParser

from .callbacks import use_compact_console
from .config import DAPOConfig


__all__ = [
    "COMMON_OPTIONS",
    "RecipeParser",
    "check_hub_inputs",
    "fail",
    "go_offline",
    "hub_reachable",
    "quiet_third_party_logs",
    "use_compact_console",
]

# Training / model options most runs set, listed by `--help` next to the recipe's and DAPO's own.
COMMON_OPTIONS = (
    "model_name_or_path",
    "output_dir",
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "steps_per_generation",
    "num_iterations",
    "max_completion_length",
    "temperature",
    "seed",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "report_to",
    "bf16",
    "use_cpu",
    "dtype",
    "use_peft",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "push_to_hub",
    "hub_model_id",
    "resume_from_checkpoint",
)


def fail(prog: str, message: str, code: int = 2) -> None:
    """Print `PROG: error: MESSAGE` on stderr and exit with `code` (no traceback)."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


# Help of inherited options whose behaviour DAPOConfig changes.
_HELP = {
    "bf16": "bf16 mixed precision. Unset: bf16 on a bf16-capable GPU, else fp32 (with a line saying so); true: insist "
    "(without a GPU, together with --use_cpu true).",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Lists `--some_option` without its `--some-option` alias (both are accepted)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        names = [name for name in action.option_strings if "-" not in name.lstrip("-")]
        if names and len(names) < len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = names
        return super()._format_action_invocation(action)


class _HelpAll(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.show_all = True
        parser.print_help()
        parser.exit()


class RecipeParser(TrlParser):
    """
    `TrlParser` for recipe scripts: grouped, short `--help` (everything with `--help-all`) and one-line errors.

    Args:
        dataclass_types: as for `TrlParser`, e.g. `(ScriptArguments, DAPOConfig, ModelConfig)`. Fields of dataclasses
            that are neither training arguments nor `ModelConfig` form the "PROG options" group.
        common (`Iterable[str]`): option names shown by `--help` in the "common training options" group
            (default: [`COMMON_OPTIONS`]).
        **kwargs: for `argparse.ArgumentParser` (`prog`, `description`, `usage`, ...).
    """

    def __init__(self, dataclass_types, common: Iterable[str] = COMMON_OPTIONS, **kwargs):
        kwargs.setdefault("usage", "%(prog)s [options]  (--help: the main options, --help-all: all of them)")
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(dataclass_types, **kwargs)
        self.show_all = False
        self.add_argument("--help-all", action=_HelpAll, help="show every option, TRL's and transformers' included")
        self.add_argument(
            "--config",
            metavar="FILE.yaml",
            default=argparse.SUPPRESS,
            help="YAML file of option values (command-line options override it)",
        )
        self._hidden_groups: list[argparse._ArgumentGroup] = []
        self._regroup(list(common))
        for action in self._actions:
            if action.dest in _HELP and action.option_strings[0] == f"--{action.dest}":
                action.help = _HELP[action.dest]

    def _sections(self, common: list[str]) -> list[tuple[str, set[str], bool]]:
        """(title, field names, shown by --help) in display order."""
        dapo = set(DAPOConfig.__dict__.get("__annotations__", {}))  # fields DAPOConfig adds or redefines
        base = {f.name for f in dataclasses.fields(TrainingArguments)}
        grpo = {f.name for f in dataclasses.fields(GRPOConfig)} - base
        script = set()
        for dtype in self.dataclass_types:
            if not issubclass(dtype, (TrainingArguments, ModelConfig)):
                script |= {f.name for f in dataclasses.fields(dtype)}
        common = set(common) - script - dapo
        return [
            (f"{self.prog} options", script, True),
            ("DAPO options", dapo - script, True),
            ("common training options", common, True),
            ("TRL GRPOConfig options", grpo - common - dapo - script, False),
            ("TRL ModelConfig options", {f.name for f in dataclasses.fields(ModelConfig)} - common, False),
            ("transformers TrainingArguments options", base - common - dapo - script, False),
        ]

    def _regroup(self, common: list[str]) -> None:
        actions = [a for a in self._optionals._group_actions if a.dest not in ("help", argparse.SUPPRESS, "config")]
        for title, names, shown in self._sections(common):
            members = [a for a in actions if a.dest in names]
            if not members:
                continue
            group = self.add_argument_group(title)
            for action in members:
                self._optionals._group_actions.remove(action)
                group._group_actions.append(action)
                actions.remove(action)
            if not shown:
                self._hidden_groups.append(group)

    def format_help(self) -> str:
        if self.show_all:
            return super().format_help()
        groups = self._action_groups
        hidden = sum(len(g._group_actions) for g in self._hidden_groups)
        self._action_groups = [g for g in groups if g not in self._hidden_groups]
        try:
            text = super().format_help()
        finally:
            self._action_groups = groups
        return f"{text}\n{hidden} more options of TRL and transformers are accepted: --help-all lists them.\n"

    def error(self, message: str) -> None:
        message = re.sub(r"(--\w+)(/--[\w-]+)+", r"\1", message)  # `--max_steps/--max-steps`: the first name
        fail(self.prog, f"{message}\n(see {self.prog} --help)")

    def parse_args_and_config(self, args: Sequence[str] | None = None, **kwargs):
        """`TrlParser.parse_args_and_config`, every argument or configuration error turned into [`error`]."""
        try:
            return super().parse_args_and_config(args, **kwargs)
        except ValueError as error:
            self.error(self._option_message(str(error)))
        except OSError as error:  # --config FILE missing or unreadable
            self.error(f"--config: {error}")
        except yaml.YAMLError as error:
            self.error(f"--config: invalid YAML: {' '.join(str(error).split())}")

    def _option_message(self, message: str) -> str:
        """Name the command-line option in a dataclass's error message; suggest close matches for unknown ones."""
        unused = re.match(r"Some specified arguments are not used by the HfArgumentParser: (\[.*\])", message)
        if unused:
            words = ast.literal_eval(unused.group(1))
            known = [s for a in self._actions for s in a.option_strings]
            hints = [
                f"{word} (did you mean {match[0]}?)"
                if (match := difflib.get_close_matches(word, known, n=1))
                else word
                for word in words
            ]
            return f"unrecognized arguments: {' '.join(hints)}"
        message = re.sub(r"\bDAPOConfig\.(\w+)", r"--\1", message)
        dests = {a.dest for a in self._actions}
        message = re.sub(  # bare field names (`num_generations (3)`) become the option that sets them
            r"(?<![-\w.`])([a-z][a-z0-9]*_[a-z0-9_]+)\b",
            lambda m: f"--{m.group(1)}" if m.group(1) in dests else m.group(1),
            message,
        )
        return " ".join(message.split())


# ------------------------------------------------------------------------------------------------------ the Hub


def go_offline() -> None:
    """Offline mode for this process: huggingface_hub (telemetry included), transformers and datasets."""
    import huggingface_hub

    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub (`HF_ENDPOINT`, default huggingface.co) answers within `timeout` seconds, offline mode unset."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cached(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    if os.path.exists(repo_id):
        return True
    if repo_type == "model":
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    import datasets

    if os.path.isdir(os.path.join(datasets.config.HF_DATASETS_CACHE, repo_id.replace("/", "___"))):
        return True  # prepared by `load_dataset` before
    try:
        return any(r.repo_id == repo_id and r.repo_type == "dataset" for r in scan_cache_dir().repos)
    except Exception:  # noqa: BLE001 - no cache folder yet
        return False


def check_hub_inputs(
    model_id: str | None,
    dataset_id: str | Sequence[str] | None,
    *,
    prog: str,
    hint: str,
    timeout: float = 3.0,
) -> bool:
    """
    Make sure the model and dataset(s) can be loaded, before anything heavy runs.

    Returns `True` when the Hub is reachable. When it is not (or `HF_HUB_OFFLINE=1`), switches this process to offline
    mode and returns `False` if every id is a local path or in the local cache; otherwise exits (status 2) with one
    line naming the missing id(s) and `hint` (e.g. the offline demo's command). `dataset_id` may be several ids (a
    training and an evaluation set).
    """
    if hub_reachable(timeout):
        return True
    go_offline()
    import datasets

    datasets.config.HF_HUB_OFFLINE = True
    dataset_ids = [dataset_id] if isinstance(dataset_id, str) else list(dataset_id or ())
    missing = [f"model {model_id!r}"] if model_id and not _cached(model_id, "model") else []
    missing += [f"dataset {d!r}" for d in dataset_ids if d and not _cached(d, "dataset")]
    if missing:
        names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        fail(
            prog,
            f"the Hugging Face Hub is unreachable (or HF_HUB_OFFLINE=1) and {names} "
            f"{'is' if len(missing) == 1 else 'are'} not in the local cache. Offline demo: {hint}",
        )
    return False


def push_final(final_dir: str, training_args) -> str:
    """Upload exactly `final_dir` to `training_args.hub_model_id` (private/token as configured); prints the URL."""
    from dapo_trl.hub import push_folder

    url = push_folder(
        final_dir,
        training_args.hub_model_id,
        private=training_args.hub_private_repo,
        token=training_args.hub_token,
    )
    print(f"pushed to {url}")
    return url


# ------------------------------------------------------------------------------------------------------ console


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_third_party_logs() -> None:
    """
    Drop DeepSpeed's "Setting accelerator to CPU" notice (logged on import on every machine without a GPU, whether or
    not DeepSpeed is used): a filter on that one message of DeepSpeed's logger, nothing else.
    """
    logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage("Setting accelerator to CPU"))
