"""Reward functions in TRL's calling convention: `f(prompts, completions, completion_ids, **kwargs) -> list[float]`."""

from __future__ import annotations

from collections.abc import Callable

from .core import overlong_penalty


OVERLONG_REWARD_NAME = "overlong_penalty"


def overlong_penalty_reward(
    max_completion_length: int, buffer_length: int, penalty_factor: float = 1.0
) -> Callable[..., list[float]]:
    """
    DAPO's soft overlong punishment as a TRL reward function named `overlong_penalty`.

    It reads the token length of each completion (`completion_ids`), see [`dapo_trl.core.overlong_penalty`].
    `DAPOTrainer` adds it itself when `DAPOConfig.overlong_buffer_length` is set.

    Example:
    ```python
    >>> reward = overlong_penalty_reward(max_completion_length=16, buffer_length=4)
    >>> reward(prompts=["p", "p"], completions=["a", "b"], completion_ids=[[1] * 10, [1] * 14])
    [0.0, -0.5]

    ```
    """
    overlong_penalty(  # validates the arguments now rather than at the first reward call
        [0], max_completion_length, buffer_length, penalty_factor
    )

    def reward(prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        lengths = [len(ids) for ids in completion_ids]
        return overlong_penalty(lengths, max_completion_length, buffer_length, penalty_factor).tolist()

    reward.__name__ = reward.__qualname__ = OVERLONG_REWARD_NAME
    return reward
