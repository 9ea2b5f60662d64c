#!/usr/bin/env bash
# Build the Docker image for real and use it as a user would; minutes and about 3 GB of
# downloads, so not part of CI. Usage, from anywhere in a checkout:
#
#   bash bench/docker_check.sh [--keep]      # --keep: leave the image and the run folder
#
# 1. The engine: docker when its daemon answers, else podman (Debian: apt-get install podman).
# 2. The base: the Dockerfile's BASE_IMAGE, pulled; where no registry can be reached, a stand-in
#    made from Debian's own packages (mmdebstrap, bookworm) replaces it, and nothing else. The
#    stand-in carries this host's CA bundle for pip (PIP_CERT), so it never enters the project's
#    Dockerfile.
# 3. Build with GIT_COMMIT = this checkout's commit ("+dirty" when it has uncommitted changes),
#    then in the image: --help, torch's CUDA against the base, a tiny SAC run into a mounted
#    folder (config.yaml with that commit, metrics.csv, a checkpoint, W&B offline files), and
#    mpdp_pl.evaluate --video on that run (EGL on the CPU).
# 4. Build again at a second commit that changes no copied file (a docs-only commit in a clone):
#    each image's runs must record its own commit.
# Prints the build time and the image size; any failure is one line on stderr and exit 1 (the
# engine's full output is in the log it names).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TAG="mpdp_pl:check"
STANDIN="localhost/mpdp_pl-standin:bookworm"
KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/docker_check.XXXXXX")"
LOG="$WORK/engine.log"
RUNS="$WORK/runs"
mkdir -p "$RUNS"

fail() { echo "docker_check: FAILED: $*" >&2; exit 1; }
step() { echo "docker_check: $*"; }

# --- 1. engine ---------------------------------------------------------------------------------
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ENGINE=docker
elif command -v podman >/dev/null; then
    ENGINE=podman
else
    fail "no container engine: neither a docker daemon nor podman (apt-get install podman mmdebstrap)"
fi
# Extra flags some hosts need (this project's VM: crun refuses its hybrid cgroups, and its
# open-file and process limits cannot be raised): tried only when a plain run fails.
HOSTFLAGS=()

BASE="$(sed -n 's/^ARG BASE_IMAGE=//p' "$ROOT/Dockerfile" | head -n1)"
[[ -n "$BASE" ]] || fail "the Dockerfile declares no ARG BASE_IMAGE=<image>"
step "engine $ENGINE ($($ENGINE --version | head -n1)); Dockerfile base $BASE; log $LOG"

# --- 2. base -----------------------------------------------------------------------------------
BUILD_BASE="$BASE"
if timeout 120 "$ENGINE" pull "$BASE" >>"$LOG" 2>&1; then
    step "pulled $BASE"
else
    command -v mmdebstrap >/dev/null \
        || fail "cannot pull $BASE and mmdebstrap is missing for a stand-in (apt-get install mmdebstrap)"
    if ! "$ENGINE" image exists "$STANDIN" >/dev/null 2>&1 \
        && ! "$ENGINE" image inspect "$STANDIN" >/dev/null 2>&1; then
        step "cannot pull $BASE: building a stand-in from Debian bookworm's packages"
        ca=/etc/ssl/certs/ca-certificates.crt
        [[ -r "$ca" ]] || fail "no CA bundle at $ca for pip inside the stand-in"
        # Valid-Until off: mirrors that serve snapshots have expired Release files.
        mmdebstrap --variant=apt --include=ca-certificates \
            --aptopt='Acquire::Check-Valid-Until "false"' \
            --customize-hook="upload $ca /usr/local/share/host-ca-bundle.crt" \
            bookworm - 2>>"$LOG" \
            | "$ENGINE" import --change "ENV PIP_CERT=/usr/local/share/host-ca-bundle.crt" \
                - "$STANDIN" >>"$LOG" 2>&1 \
            || fail "could not build the stand-in base (see $LOG)"
    fi
    BUILD_BASE="$STANDIN"
    step "base: stand-in $STANDIN (Debian bookworm from Debian's packages)"
fi

# A plain container on the base decides the host flags.
if ! "$ENGINE" run --rm "$BUILD_BASE" true >>"$LOG" 2>&1; then
    HOSTFLAGS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
    [[ "$ENGINE" == podman ]] && HOSTFLAGS=(--runtime runc "${HOSTFLAGS[@]}")
    "$ENGINE" run --rm "${HOSTFLAGS[@]}" "$BUILD_BASE" true >>"$LOG" 2>&1 \
        || fail "$ENGINE cannot run a container on this host, even with ${HOSTFLAGS[*]} (podman: apt-get install runc; see $LOG)"
    step "this host needs: ${HOSTFLAGS[*]}"
fi
BUILDFLAGS=()
for f in "${HOSTFLAGS[@]}"; do [[ "$f" == --runtime || "$f" == runc ]] || BUILDFLAGS+=("$f"); done
[[ "$ENGINE" == podman && ${#HOSTFLAGS[@]} -gt 0 ]] && BUILDFLAGS+=(--runtime runc)

# --- 3. build ----------------------------------------------------------------------------------
COMMIT="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null)" || fail "not a git checkout: $ROOT"
[[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]] || COMMIT="$COMMIT+dirty"
t0=$(date +%s)
"$ENGINE" build "${BUILDFLAGS[@]}" --build-arg "BASE_IMAGE=$BUILD_BASE" \
    --build-arg "GIT_COMMIT=$COMMIT" -t "$TAG" "$ROOT" >>"$LOG" 2>&1 \
    || fail "$ENGINE build (see $LOG)"
build_s=$(( $(date +%s) - t0 ))
size=$("$ENGINE" image inspect --format '{{.Size}}' "$TAG")
step "built $TAG in ${build_s} s; image size $(( size / 1000000 )) MB; GIT_COMMIT=$COMMIT"

run() { "$ENGINE" run --rm "${HOSTFLAGS[@]}" -v "$RUNS:/app/runs" "$@"; }

# --- 4. use it ---------------------------------------------------------------------------------
out="$(run "$TAG" --help 2>>"$LOG")" || fail "train.py --help in the image"
grep -q "usage: train.py" <<<"$out" || fail "train.py --help printed no usage line"
step "--help: ok"

cuda="$(run --entrypoint python "$TAG" -c \
    "import torch, os; print(torch.__version__, torch.version.cuda, os.path.isdir('/usr/local/cuda'))" \
    2>>"$LOG")" || fail "importing torch in the image"
read -r torch_v torch_cuda base_cuda <<<"$cuda"
[[ "$torch_cuda" != None ]] || fail "the image's torch $torch_v has no CUDA (the CPU wheel?)"
[[ "$base_cuda" == False ]] || fail "the base holds a CUDA toolkit beside torch's own CUDA $torch_cuda"
step "torch $torch_v brings CUDA $torch_cuda; the base holds no CUDA of its own"

run "$TAG" --env InvertedPendulum-v4 --algo sac --seed 0 --out /app/runs/tiny steps=300 \
    data.init_random_steps=100 eval.every=150 eval.episodes=2 data.batch_size=64 trainer.num_threads=1 \
    >>"$LOG" 2>&1 || fail "a tiny run in the image (see $LOG)"
[[ -f "$RUNS/tiny/config.yaml" ]] || fail "the tiny run wrote no config.yaml"
recorded="$(sed -n 's/^ *git_commit: *//p' "$RUNS/tiny/config.yaml" | head -n1)"
[[ "$recorded" == "$COMMIT" ]] || fail "the run recorded git_commit '$recorded', not '$COMMIT'"
rows=$(( $(wc -l <"$RUNS/tiny/metrics.csv") - 1 ))
[[ "$rows" -ge 2 ]] || fail "metrics.csv has $rows evaluation rows, expected 2 or more"
compgen -G "$RUNS/tiny/checkpoints/step*" >/dev/null || fail "the tiny run wrote no checkpoint"
compgen -G "$RUNS/tiny/wandb/offline-run-*" >/dev/null || fail "the tiny run wrote no offline W&B run"
step "tiny run: $rows metrics rows, a checkpoint, W&B offline files, git_commit $recorded"

run --entrypoint python "$TAG" -m mpdp_pl.evaluate /app/runs/tiny --episodes 1 \
    --video /app/runs/tiny.mp4 >>"$LOG" 2>&1 || fail "mpdp_pl.evaluate --video in the image (see $LOG)"
[[ -s "$RUNS/tiny.mp4" ]] || fail "evaluate --video wrote no mp4"
frames="$(run --entrypoint python "$TAG" -c "import imageio.v3 as iio
f = iio.imread('/app/runs/tiny.mp4')
print(f.shape[0], int(f.max()))" 2>>"$LOG")" || fail "the mp4 does not decode"
read -r nframes peak <<<"$frames"
[[ "$nframes" -ge 2 && "$peak" -ge 50 ]] || fail "the mp4 has $nframes frames, brightest pixel $peak: a blank render?"
step "evaluate --video: $nframes frames rendered (EGL on the CPU), brightest pixel $peak"

# --- 5. a second commit that changes no copied file (a docs-only commit): the rebuild comes from
# the cache but for the commit's own RUN, and its runs must record the new commit, the first
# image's runs the old one (buildah reused a cached ENV with the old value: issues 5501, 5575)
SRC2="$WORK/src2"
git clone -q "$ROOT" "$SRC2" || fail "cloning $ROOT for the second build"
echo "docker_check: a change outside the copied files" >>"$SRC2/docs/usage.md"
git -C "$SRC2" -c user.name=docker_check -c user.email=docker_check@localhost \
    commit -qam "docker_check: docs only" || fail "the docs-only commit"
COMMIT2="$(git -C "$SRC2" rev-parse HEAD)"
t0=$(date +%s)
"$ENGINE" build "${BUILDFLAGS[@]}" --build-arg "BASE_IMAGE=$BUILD_BASE" \
    --build-arg "GIT_COMMIT=$COMMIT2" -t "$TAG-2" "$SRC2" >>"$LOG" 2>&1 \
    || fail "$ENGINE build of the docs-only commit (see $LOG)"
build2_s=$(( $(date +%s) - t0 ))
recorded_by() {  # image, run name -> the git_commit its tiny run records
    run "$1" --env InvertedPendulum-v4 --algo sac --out "/app/runs/$2" steps=100 \
        data.init_random_steps=50 eval.every=100 eval.episodes=1 data.batch_size=32 trainer.num_threads=1 \
        --logger none >>"$LOG" 2>&1 || fail "a tiny run in $1 (see $LOG)"
    sed -n 's/^ *git_commit: *//p' "$RUNS/$2/config.yaml" | head -n1
}
second="$(recorded_by "$TAG-2" second)"
[[ "$second" == "$COMMIT2" ]] || fail "the docs-only rebuild's run recorded '$second', not '$COMMIT2'"
first="$(recorded_by "$TAG" first_again)"
[[ "$first" == "$COMMIT" ]] || fail "the first image's run now records '$first', not '$COMMIT'"
step "docs-only commit $COMMIT2: rebuilt in ${build2_s} s; its run records it, the first image's still $COMMIT"
"$ENGINE" rmi "$TAG-2" >>"$LOG" 2>&1

if [[ "$KEEP" == 1 ]]; then
    step "kept: image $TAG, runs in $RUNS"
else
    "$ENGINE" rmi "$TAG" >>"$LOG" 2>&1
    rm -rf "$RUNS"
fi
echo "docker_check passed: $ENGINE, base ${BUILD_BASE}, build ${build_s} s, image $(( size / 1000000 )) MB, torch $torch_v (CUDA $torch_cuda)"
