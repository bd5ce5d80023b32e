"""The project's scripts keep working: scripts/cpu_crosscheck.py scores a committed H100 run's models on the
CPU and finds the recorded accuracy on the same examples."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

RUN = REPO / "results" / "reference" / "h100" / "synthetic_paper" / "20261206-141114"


def test_the_cpu_crosscheck_reproduces_the_h100_accuracy_on_the_same_examples():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "cpu_crosscheck.py"), str(RUN), "--length", "64",
                             "--samples", "256", "--seeds", "2"], capture_output=True, text=True, timeout=300,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("seed 2, L=64: CPU (torch-chunked-scan) 3.52% of 256" in result.stdout
            and "recorded (mamba_ssm-cuda, NVIDIA H100 80GB HBM3) 3.52% of 256; same examples: True; equal" in result.stdout)


def test_the_cpu_crosscheck_says_what_is_missing():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "cpu_crosscheck.py"), str(RUN), "--length", "77",
                             "--samples", "8", "--seeds", "0"], capture_output=True, text=True, timeout=300,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "no accuracy record at L=77" in result.stderr
