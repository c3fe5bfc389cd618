"""The examples in the docstrings of dapo_trl's modules run and print what they say."""

from __future__ import annotations

import doctest

import pytest

import dapo_trl.callbacks
import dapo_trl.config
import dapo_trl.core
import dapo_trl.data
import dapo_trl.evaluation
import dapo_trl.rewards
import dapo_trl.sampling
import dapo_trl.testing
from dapo_trl.recipe_utils import quiet_third_party_logs


@pytest.mark.parametrize(
    "module",
    [dapo_trl.core, dapo_trl.sampling, dapo_trl.rewards, dapo_trl.config, dapo_trl.data, dapo_trl.evaluation,
     dapo_trl.testing, dapo_trl.callbacks],
    ids=lambda module: module.__name__,
)  # fmt: skip
def test_doctests(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write relative folders ("out", "tiny")
    quiet_third_party_logs()  # DeepSpeed's "Setting accelerator to CPU" line would land in an example's output
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {module.__name__}"
    assert result.attempted > 0, f"no doctest found in {module.__name__}"
