"""The GPU image and the nightly workflow: linted by hadolint and actionlint (dev dependencies that ship
the binaries), and checked for what the nightly gate relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

DOCKERFILE = REPO / "Dockerfile.cuda"
WORKFLOW = REPO / ".github" / "workflows" / "nightly-gpu.yml"


def _tool(name: str) -> str:
    """The linter's binary: installed beside this interpreter (the dev extra), or on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_hadolint_passes_the_dockerfile():
    result = subprocess.run([_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_passes_the_workflow():
    result = subprocess.run([_tool("actionlint"), str(WORKFLOW.relative_to(REPO))], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_builds_the_kernels_as_their_docs_say():
    text = DOCKERFILE.read_text()
    base = next(line for line in text.splitlines() if line.startswith("ARG PYTORCH_IMAGE="))
    assert base.startswith("ARG PYTORCH_IMAGE=pytorch/pytorch:") and base.endswith("-devel")  # nvcc for builds
    assert "ARG CUDA_ARCHS=" in text and "ARG KERNELS=prebuilt" in text
    assert 'ENTRYPOINT ["ssmbench"]' in text and "/work/results" in text and "/cache/huggingface" in text
    script = (REPO / "docker" / "install_kernels.sh").read_text()
    commands = [line for line in script.splitlines() if line.strip().startswith(("pip", "(cd"))]
    assert sum("--no-build-isolation" in c for c in commands) == 2  # the prebuilt wheel and the source build
    assert "arch=compute_${arch},code=sm_${arch}" in script
    assert subprocess.run(["bash", "-n", str(REPO / "docker" / "install_kernels.sh")]).returncode == 0


def test_the_workflow_runs_nightly_and_gates_on_the_diff():
    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    job = flow["jobs"]["nightly"]
    assert "self-hosted" in job["runs-on"] and "gpu-h100" in job["runs-on"]
    steps = " ".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])
    assert "docker build -f Dockerfile.cuda" in steps and "run suites/nightly.yaml" in steps
    assert "upload-artifact" in steps and " diff \"$base\" \"$run\"" in steps
    assert "--gpus all" in steps


def test_the_nightly_suite_covers_every_kind():
    from ssmbench.kinds import kind_names
    from ssmbench.spec import load_suite

    suite, _ = load_suite(REPO / "suites" / "nightly.yaml")
    assert {t.kind for t in suite.tasks} == set(kind_names())
    assert suite.regression["default"] > 0
