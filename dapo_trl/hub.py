"""Save a DAPO-trained model (LoRA adapter or full weights) with its model card, and push exactly that folder.

```python
from dapo_trl.hub import push_folder, save_for_hub

trainer.train()
save_for_hub(trainer, "outputs/hub", base_model="Qwen/Qwen2.5-0.5B-Instruct", dataset_name="openai/gsm8k",
             metrics={"gsm8k_accuracy_before": 0.31, "gsm8k_accuracy_after": 0.47})
push_folder("outputs/hub", "me/qwen2.5-0.5b-gsm8k-dapo")  # token: `hf auth login`, HF_TOKEN or token=...
```

What TRL and huggingface_hub do not do: `save_for_hub` writes only what belongs on the Hub (the weights, for a PEFT
model only the adapter pointing at the Hub base model; the tokenizer; the model card, which is the one
`DAPOTrainer.create_model_card` writes into `output_dir` at every checkpoint, from TRL's template) and leaves out
`training_args.bin` (a pickle of the whole config, which can hold `hub_token`). `push_folder` uploads exactly that
folder, where `Trainer.push_to_hub` uploads the whole `output_dir`. Nothing here reads a token.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings


__all__ = ["push_folder", "save_for_hub"]

_TRAINING_ARGS_FILE = "training_args.bin"


# ------------------------------------------------------------------------------------------------------- saving


def save_for_hub(
    trainer,
    output_dir: str | os.PathLike,
    *,
    base_model: str,
    dataset_name: str | list[str] | None,
    metrics: dict | None = None,
    extra: str | None = None,
    repo_id: str | None = None,
) -> list[str]:
    """
    Write a Hub-ready folder: the model, the tokenizer and the model card.

    - the model with `trainer.save_model(output_dir)`: for a PEFT model only the adapter (`adapter_config.json` and
      `adapter_model.safetensors`, whose `base_model_name_or_path` is set to `base_model`), otherwise the full
      weights (`model.safetensors` and config); works under DeepSpeed / FSDP, so call it on every process;
    - the tokenizer / processor (`trainer.processing_class.save_pretrained`);
    - `README.md`: the card of [`DAPOTrainer.create_model_card`] (also left in `trainer.args.output_dir`).

    `training_args.bin`, which `save_model` also writes, is removed: it is a pickle of the whole config (it can hold
    `hub_token`) and is not needed to use the model. `save_model` does not push here even if `args.push_to_hub` is
    set: use [`push_folder`]. Use a dedicated folder: [`push_folder`] uploads everything in it (files left over from
    an earlier save are reported with a warning).

    Returns:
        `list[str]`: the (sorted, folder-relative) names of the files this call wrote; empty on processes other than
        the main one.
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    before = _snapshot(output_dir)
    # `_internal_call=True`: the user-facing save_model would also push args.output_dir when args.push_to_hub is set.
    trainer.save_model(output_dir, _internal_call=True)
    if trainer.is_world_process_zero():
        args_file = os.path.join(output_dir, _TRAINING_ARGS_FILE)
        if os.path.exists(args_file):
            os.remove(args_file)
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(output_dir)
        _point_adapter_at(output_dir, base_model)
        trainer.create_model_card(
            dataset_name=dataset_name, base_model=base_model, metrics=metrics, extra=extra, repo_id=repo_id
        )  # writes args.output_dir/README.md: the same card as the checkpoints'
        card = os.path.join(trainer.args.output_dir, "README.md")
        if os.path.realpath(card) != os.path.realpath(os.path.join(output_dir, "README.md")):
            shutil.copyfile(card, os.path.join(output_dir, "README.md"))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return []
    after = _snapshot(output_dir)
    written = sorted(name for name, stat in after.items() if before.get(name) != stat)
    stale = sorted(name for name in after if name not in written)
    if stale:
        warnings.warn(
            f"{output_dir} also holds files this save did not write, which push_folder would upload too: "
            f"{', '.join(stale[:10])}{' ...' if len(stale) > 10 else ''}. Save into an empty folder.",
            stacklevel=2,
        )
    return written


def _snapshot(folder: str) -> dict[str, tuple[int, int, int]]:
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            stat = os.stat(path)
            files[os.path.relpath(path, folder).replace(os.sep, "/")] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return files


def _point_adapter_at(output_dir: str, base_model: str) -> None:
    """Make `adapter_config.json` name the Hub base model (peft writes the path training loaded it from)."""
    path = os.path.join(output_dir, "adapter_config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("base_model_name_or_path") != base_model:
        config["base_model_name_or_path"] = base_model
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)


# ------------------------------------------------------------------------------------------------------- pushing


def push_folder(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload model trained with DAPO (dapo-trl)",
    endpoint: str | None = None,
) -> str:
    """
    Create the model repo `repo_id` (if it does not exist) and upload the folder `output_dir` to it in one commit.

    Args:
        output_dir: Folder to upload, e.g. the one written by [`save_for_hub`]. Every file in it is uploaded.
        repo_id (`str`): `namespace/name` of the model repo.
        private (`bool`, *optional*): Visibility of a newly created repo (`None`: the namespace's default).
        token (`str`, *optional*): Hub token; by default huggingface_hub's own lookup (`HF_TOKEN`, `hf auth login`).
            It is only ever sent in the `Authorization` header.
        commit_message (`str`): Message of the commit.
        endpoint (`str`, *optional*): Hub URL of the upload; defaults to huggingface_hub's (`HF_ENDPOINT` when the
            process started, else huggingface.co). huggingface_hub's global settings are left as they are, so its
            own side requests (e.g. the agent-harness registry it fetches once a day) follow `HF_ENDPOINT`.

    Returns:
        `str`: URL of the commit.
    """
    from huggingface_hub import HfApi

    from . import __version__

    folder = os.fspath(output_dir)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a directory: write it with save_for_hub first.")
    api = HfApi(endpoint=endpoint, token=token, library_name="dapo-trl", library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, repo_type="model")
    return str(commit.commit_url)
