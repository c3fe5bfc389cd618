"""The benchmark scripts still run (their --quick smoke modes), so the numbers in benchmarks/ can be regenerated."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", ["overhead.py", "dynamic_sampling.py", "ablation.py", "scaling.py"])
def test_benchmark_quick_mode(script, tmp_path):
    out = tmp_path / "report.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert out.stat().st_size > 500
