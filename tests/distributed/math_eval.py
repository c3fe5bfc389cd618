"""Launched by tests/test_dapo_math.py with `torchrun --nproc_per_node 2`: `evaluate_math` shards 5 problems over 2
processes (3 each, one padded), makes the same number of `generate` calls on both and gathers the same results."""

import json
import sys

import torch.distributed as dist
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

import dapo_trl.evaluation as evaluation
from tests.helpers import run_and_shut_down


def main(model_dir: str, out_prefix: str) -> None:
    state = PartialState(cpu=True)  # initializes the process group (gloo), as the trainer's arguments do on CPU
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    calls, real_generate = [], model.generate

    def counting_generate(**kwargs):  # ZeRO-3 needs every process to make the same calls
        calls.append(kwargs["input_ids"].shape[0])
        return real_generate(**kwargs)

    model.generate = counting_generate
    prompts = [[{"role": "user", "content": f"{i}+1="}] for i in range(5)]
    dataset = Dataset.from_dict({"prompt": prompts, "answer": [str(i + 1) for i in range(5)]})
    metrics, details = evaluation.evaluate_math(
        model, tokenizer, dataset, k=2, max_new_tokens=6, batch_size=2, return_details=True
    )
    result = {"processes": state.num_processes, "metrics": metrics, "details": details, "calls": calls}
    with open(f"{out_prefix}.rank{dist.get_rank()}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    run_and_shut_down(main, sys.argv[1], sys.argv[2])
