#!/usr/bin/env bash
# The prepared GPU check (issues 19, 27): at most about 10 minutes on one GPU, most important first.
#
#   bash bench/gpu_check.sh OUT_DIR [--device cuda|cpu]
#
# Needs .gpu_carry/ (bench/gpu_carry.sh builds it) next to the checkout. On the device machine:
# run(command="bash bench/gpu_check.sh $OUT", carry=[".gpu_carry"]). With --device cpu the same
# steps run on the CPU (shorter windows), which is how the script is proven before GPU time is
# spent. Every step writes OUT_DIR/<step>.log and OUT_DIR/results.json is rewritten after each:
#   1. cuda_tests   tests/test_cuda.py (the device against the CPU, train/resume, no host sync)
#   2. farsighted   bench/farsighted.py on the carried MPDP checkpoint: static and live forms,
#                   at the checkpoint's u_T and at horizons of about 3 and 5; peak GPU memory
#   3. loop         bench/cost.py from the carried 30k-transition Hopper data: MPDP's whole loop
#                   per 1k env steps by part (model training, evaluation included)
#   4. compile      the farsighted update under torch.compile, under its own time cap
#   5. planners     bench/planner_cost.py: PETS, POPLIN-A and POPLIN-P per env step at the
#                   published CEM settings and the reduced ones (issue 27's GPU cost)
#   6. baselines    bench/cost.py's loop for SAC, DDPG and M2AC at 30k buffered (caps: 570 s)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash bench/gpu_check.sh OUT_DIR [--device cuda|cpu]}"
device=cuda
[ "${2:-}" = "--device" ] && device="${3:?--device needs cuda or cpu}"
case "$device" in cuda|cpu) ;; *) echo "error: --device must be cuda or cpu, got $device" >&2; exit 2;; esac
mkdir -p "$out"
started=$(date +%s)

if [ -d .gpu_carry/wheels ] && ! python3 -c "import torchrl, tensordict, gymnasium, mujoco" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu_check_site .gpu_carry/wheels/*.whl >"$out/install.log" 2>&1 \
    || { echo "error: installing .gpu_carry/wheels failed (see $out/install.log)"; exit 1; }
  export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MUJOCO_GL=egl
python3 - "$out" "$device" <<'PY' || exit 1
import json, platform, sys
try:
    import torch, lightning, tensordict, torchrl, gymnasium, mujoco  # noqa: F401
    import mpdp_pl.run  # noqa: F401
except Exception as e:  # one line, within seconds
    print(f"error: import failed: {type(e).__name__}: {e}")
    sys.exit(1)
out, device = sys.argv[1], sys.argv[2]
if device == "cuda" and not torch.cuda.is_available():
    print("error: --device cuda but torch sees no CUDA device")
    sys.exit(1)
v = {"python": platform.python_version(), "torch": torch.__version__,
     "cuda": torch.version.cuda, "lightning": lightning.__version__,
     "tensordict": tensordict.__version__, "torchrl": torchrl.__version__,
     "gymnasium": gymnasium.__version__, "mujoco": mujoco.__version__, "device": device,
     "gpu": torch.cuda.get_device_name() if device == "cuda" else None}
print("versions:", json.dumps(v))
json.dump({"versions": v, "steps": {}}, open(f"{out}/results.json", "w"), indent=1)
PY

step() {  # step NAME CAP_SECONDS COMMAND...: run, log, and record rc, seconds and the last lines
  local name=$1 cap=$2; shift 2
  local t0 rc; t0=$(date +%s)
  echo "== $name (cap ${cap}s): $*"
  timeout "$cap" "$@" >"$out/$name.log" 2>&1; rc=$?
  tail -n 12 "$out/$name.log" | grep -v "^\s*$"
  python3 - "$out" "$name" "$rc" "$(( $(date +%s) - t0 ))" "$*" <<'PY'
import json, sys
out, name, rc, secs, cmd = sys.argv[1:]
path = f"{out}/results.json"
res = json.load(open(path))
tail = open(f"{out}/{name}.log", errors="replace").read().splitlines()[-40:]
res["steps"][name] = {"rc": int(rc), "seconds": int(secs), "command": cmd,
                      "timed_out": int(rc) in (124, 137), "tail": tail}
json.dump(res, open(path, "w"), indent=1)
PY
}

accel=$([ "$device" = cuda ] && echo gpu || echo cpu)
window=$([ "$device" = cuda ] && echo 1000 || echo 250)
MPDP_CHECK_DEVICE=$device step cuda_tests 150 python3 -m pytest -q -p no:cacheprovider \
  -o addopts="" -m cuda tests/test_cuda.py
step farsighted 60 python3 bench/farsighted.py .gpu_carry/mpdp --repeat 20 --horizons 3 5 \
  --device "$device"
step loop 120 python3 bench/cost.py .gpu_carry/sac --algos mpdp --at 30000 --window "$window" \
  "trainer.accelerator=$accel"
step compile 60 python3 bench/farsighted.py .gpu_carry/mpdp --repeat 10 --horizons --compile \
  --device "$device"
step planners 60 python3 bench/planner_cost.py --env Hopper-v4 --plans 3 --device "$device"
step baselines 120 python3 bench/cost.py .gpu_carry/sac --algos sac ddpg m2ac --at 30000 \
  --window 250 "trainer.accelerator=$accel"
echo "done in $(( $(date +%s) - started ))s; results in $out/results.json"
