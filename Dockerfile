# mpdp_pl on a GPU box (bench/docker_check.sh builds and runs it for real):
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t mpdp_pl .
#   docker run --gpus all -e WANDB_API_KEY -v "$PWD/runs:/app/runs" mpdp_pl --env Humanoid-v4
#
# A plain OS base, no CUDA base: PyPI's torch==2.13.0 wheel for Linux x86_64 is 2.13.0+cu130 and
# brings its own CUDA 13.0 runtime, cuBLAS and cuDNN as nvidia-* wheels, so a CUDA base image
# would only add a second, unused CUDA. The host needs an NVIDIA driver for CUDA 13.0 (R580 or
# newer) and the NVIDIA Container Toolkit. Debian bookworm's Python is 3.11, the version this
# project is tested with. BASE_IMAGE is for bench/docker_check.sh: where no registry can be
# reached it builds on a stand-in made from Debian's own packages.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MUJOCO_GL=egl \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    PATH=/opt/venv/bin:$PATH

# Python, and EGL/GL for headless MuJoCo rendering (training videos, evaluate --video): Mesa's
# EGL on the CPU; with --gpus the toolkit adds the driver's EGL ("graphics" capability above).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libegl1 libgl1 \
       libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md train.py ./
COPY conf ./conf
COPY mpdp_pl ./mpdp_pl
COPY hydra_plugins ./hydra_plugins
# The README's install: the dependencies live in pyproject.toml only.
RUN pip install -e .

# The image holds no .git: runs record the commit this RUN writes (mpdp_pl/run.py,
# source_commit; "unknown" when the build gave no GIT_COMMIT). A RUN that uses the argument, not
# an ENV set from it: builders key a RUN's cache on the argument's value, while buildah (podman)
# can reuse a cached ENV layer with an older value (its issues 5501 and 5575). Declared last, so
# that a new commit does not invalidate the layers above.
ARG GIT_COMMIT=unknown
RUN printf '%s\n' "${GIT_COMMIT}" > /app/GIT_COMMIT

# W&B: pass WANDB_API_KEY with -e to log online; without it runs log offline under /app/runs.
VOLUME ["/app/runs"]
ENTRYPOINT ["python", "train.py"]
