# mpdp_pl on a GPU box:  docker build -t mpdp_pl .
#   docker run --gpus all -e WANDB_API_KEY -v "$PWD/runs:/app/runs" mpdp_pl --env Humanoid-v4
# The PyPI wheel of torch 2.13.0 for Linux x86_64 is the CUDA build (it brings its CUDA
# libraries); the host needs only the NVIDIA driver and the container toolkit.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MUJOCO_GL=egl

# EGL/GL for headless MuJoCo rendering; git so runs record their commit.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libgl1 libglib2.0-0 git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md train.py ./
COPY conf ./conf
COPY mpdp_pl ./mpdp_pl
# Same install as the README: the dependencies live in pyproject.toml only.
RUN pip install -e .

VOLUME ["/app/runs"]
ENTRYPOINT ["python", "train.py"]
