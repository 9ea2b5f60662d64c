"""The Dockerfile cannot be built here (no Docker engine); CI lints it with hadolint, and this
checks that it installs from the same dependency source as the README and runs train.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest

from conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()


def instructions(name: str) -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [ln.split(None, 1)[1] for ln in text.splitlines() if ln.startswith(name + " ")]


def test_pip_installs_the_project_as_the_readme_does_and_nothing_else():
    pip_cmds = [c for run in instructions("RUN") for c in run.split("&&") if "pip install" in c]
    assert [c.strip() for c in pip_cmds] == ["pip install -e ."]
    assert "pip install -e ." in README  # the README's install command
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("torch==") for d in deps)  # the image gets torch from the same pin


def test_image_copies_what_the_install_needs_and_runs_train_py():
    copied = " ".join(instructions("COPY"))
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]  # mpdp_pl and hydra_plugins (the mpdp_pool launcher)
    for path in ("pyproject.toml", "README.md", "train.py", "conf", *(p.rstrip("*") for p in packages)):
        assert path in copied, path
    assert instructions("ENTRYPOINT") == ['["python", "train.py"]']
    assert "MUJOCO_GL=egl" in DOCKERFILE and '"/app/runs"' in DOCKERFILE
    assert instructions("FROM")[0].startswith("nvidia/cuda:")
    for cmd in ("docker build -t mpdp_pl .", "docker run --gpus all -e WANDB_API_KEY"):
        assert cmd in README


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed")
def test_hadolint_passes():
    proc = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], cwd=ROOT, check=False,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
