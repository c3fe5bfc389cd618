"""Launched by tests/test_distributed.py with `torchrun --nproc_per_node 2`: the same optimizer batch split over
2 processes gives the gradient of the whole batch on one process (float64)."""

import json
import sys
import tempfile

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from dapo_trl import DAPOTrainer
from dapo_trl.core import LOSS_AGG_MODES, LOSS_TYPES
from tests.helpers import constant_reward, kind_dataset, make_config, run_and_shut_down
from tests.test_loss import grads_of, make_batch


def main(model_dir: str, out_path: str) -> None:
    cases = {mode: {"loss_agg_mode": mode, "clip_ratio_c": 3.0} for mode in LOSS_AGG_MODES}
    cases.update({f"loss_type={name}": {"loss_type": name} for name in LOSS_TYPES})
    # The entropy quantile is taken over the tokens of both processes; the entropy bonus is a step token mean.
    cases["entropy-mask+off-policy-mask"] = {"top_entropy_quantile": 0.5, "off_policy_mask_threshold": 0.0}
    cases["gspo+delta+entropy-bonus"] = {
        "loss_type": "grpo",
        "importance_sampling_level": "sequence",
        "delta": 1.5,
        "entropy_coef": 0.05,
    }
    results = {}
    for label, options in cases.items():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
        args = make_config(tempfile.mkdtemp(), **options)
        trainer = DAPOTrainer(model=model, reward_funcs=constant_reward, args=args, train_dataset=kind_dataset(8))
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        processes, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
        batch = make_batch(model, off_policy=1.0)  # identical on both ranks (seeded)
        mask = batch["completion_mask"]
        window = {
            "num_items_in_batch": mask.sum().double(),
            "num_seqs_in_batch": (mask.sum(-1) > 0).sum().double(),
            "num_rows_in_batch": float(len(mask)),  # rows of the whole step (Dr. GRPO's constant normalizer)
        }

        # Whole batch on this process: the loss is scaled by `processes` (it expects its share of the batch).
        model.zero_grad()
        (trainer.compute_loss(model, {**batch, **window}) / processes).backward()
        reference = grads_of(model).clone()

        # Split: rank r takes rows [3r, 3r + 3); gradients are averaged as DDP does.
        model.zero_grad()
        rows = slice(3 * rank, 3 * rank + 3)
        part = {key: value[rows] if value.dim() else value for key, value in batch.items()}
        trainer.compute_loss(model, {**part, **window}).backward()
        grads = grads_of(model).clone()
        dist.all_reduce(grads)
        grads /= processes
        results[label] = {
            "relative_error": ((grads - reference).norm() / reference.norm()).item(),
            "processes": processes,
        }
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    run_and_shut_down(main, sys.argv[1], sys.argv[2])
