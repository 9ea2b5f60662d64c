# mpdp_pl on a GPU box:
#   docker build -t mpdp_pl .
#   docker run --gpus all -e WANDB_API_KEY -v "$PWD/runs:/app/runs" mpdp_pl --env Humanoid-v4
# CUDA runtime base; the host needs the NVIDIA driver and the container toolkit. torch comes
# from pyproject.toml's pin like every other dependency: PyPI's Linux x86_64 wheel of that
# release is the CUDA build.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MUJOCO_GL=egl \
    PATH=/opt/venv/bin:$PATH

# Python, EGL/GL for headless MuJoCo rendering (training videos, evaluate --video), git so
# runs record their commit.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libegl1 libgl1 \
       libglib2.0-0 git \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md train.py ./
COPY conf ./conf
COPY mpdp_pl ./mpdp_pl
COPY hydra_plugins ./hydra_plugins
# The README's install: the dependencies live in pyproject.toml only.
RUN pip install -e .

# W&B: pass WANDB_API_KEY with -e to log online; without it runs log offline under /app/runs.
VOLUME ["/app/runs"]
ENTRYPOINT ["python", "train.py"]
