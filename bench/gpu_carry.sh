#!/usr/bin/env bash
# Builds .gpu_carry/ (git-ignored), what bench/gpu_check.sh needs on a GPU machine that has
# Python 3.12, PyTorch, Lightning and pytest but not this project's other packages, and no network:
#   .gpu_carry/wheels/  cp312 wheels of the packages the check imports and the machine lacks
#                       (torchrl, tensordict, gymnasium, mujoco and their import-time needs; about
#                       17 MB: mujoco-studio and importlib_metadata are left out, nothing imports them)
#   .gpu_carry/mpdp/    an MPDP Hopper-v4 checkpoint (the farsighted benchmark's weights and states)
#   .gpu_carry/sac/     a Hopper-v4 run directory with >= 30k real transitions (the whole loop's data)
#
#   bash bench/gpu_carry.sh MPDP_CHECKPOINT_DIR SAC_RUN_DIR
#
# The two runs, if you have none (docs/cost.md's commands; the MPDP run can stop after its
# checkpoint at 5k env steps):
#   python train.py --env Hopper-v4 --algo sac --steps 31000 --seed 0 --out runs/sac_hopper_s0 \
#       --logger csv data.init_random_steps=1000 eval.every=5000 durability.checkpoint_every=0 trainer.num_threads=1
#   python train.py --env Hopper-v4 --algo mpdp --steps 10000 --seed 0 --out runs/mpdp_hopper_s0 \
#       --logger csv data.init_random_steps=1000 eval.every=1000 durability.checkpoint_every=5000 trainer.num_threads=1
# then: bash bench/gpu_carry.sh runs/mpdp_hopper_s0/checkpoints/step000005000 runs/sac_hopper_s0
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bash bench/gpu_carry.sh MPDP_CHECKPOINT_DIR SAC_RUN_DIR" >&2; exit 2; }
[ -f "$1/state.pt" ] || { echo "error: $1 is not a checkpoint directory (no state.pt)" >&2; exit 2; }
[ -d "$2/checkpoints" ] || { echo "error: $2 is not a run directory with checkpoints" >&2; exit 2; }
rm -rf .gpu_carry
mkdir -p .gpu_carry/wheels
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
for pkg in torchrl==0.14.1 tensordict==0.14.3 gymnasium==1.4.0 farama-notifications==0.0.6 \
           mujoco==4.0.0 mujoco-core==4.0.0 glfw==2.11.0 pyopengl==3.1.10 pyvers==0.2.3 \
           orjson==3.13.0 hoptorch==0.1.4; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .gpu_carry/wheels "$pkg"
done
cp -rL "$1" .gpu_carry/mpdp
mkdir -p .gpu_carry/sac/checkpoints
cp "$2/config.yaml" .gpu_carry/sac/
latest=$(cat "$2/checkpoints/latest")  # the name of the newest checkpoint directory
cp -r "$2/checkpoints/$latest" .gpu_carry/sac/checkpoints/
echo "$latest" > .gpu_carry/sac/checkpoints/latest
du -sh .gpu_carry .gpu_carry/*
