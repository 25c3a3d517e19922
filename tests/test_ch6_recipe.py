"""The chapter-6 target benchmark runs end to end (smoke run; timings are never judged)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "ch6_recipe.py"


def test_quick_run(tmp_path):
    if not os.environ.get("XPROP_DATA_DIR"):
        pytest.skip("set XPROP_DATA_DIR to a folder with the four MNIST .gz files to run this")
    if os.environ.get("XPROP_BACKEND", "numpy") != "numpy":
        pytest.skip("the target is a numpy measurement; it runs in the numpy session")
    record = tmp_path / "ch6.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(record)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert out[2].split() == [
        "seed",
        "ch5",
        "s",
        "ch5",
        "acc",
        "recipe",
        "s",
        "recipe",
        "acc",
        "ratio",
    ]
    assert re.fullmatch(r"\s+0\s+\S+\s+0\.\d{4}\s+\S+\s+0\.\d{4}\s+\S+", out[3])
    summary = json.loads(record.read_text())["summary"]
    assert 0.95 < summary["min_accuracy"] < 1  # one epoch of the recipe
    assert summary["chapter5_median_s"] > 0
