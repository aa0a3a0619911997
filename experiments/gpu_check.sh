#!/usr/bin/env bash
# Builds jax_gmm with its CUDA module on a GPU machine and checks it: the whole
# test suite, compute-sanitizer (memcheck, racecheck, initcheck) over the small
# GPU tests, and the quick GPU benchmark where experiments/benchmark.py exists.
# Every step runs even if an earlier one failed; the exit status says whether
# all passed. Output goes to the terminal and to
# experiments/results/gpu_check_<device>_<date>.log.
#
#   bash experiments/gpu_check.sh               # every step
#   bash experiments/gpu_check.sh build tests   # some of: build tests sanitize bench
# (a machine that allows only so many minutes a command can take the steps in
# turn; the build stays installed between them).
set -uo pipefail
cd "$(dirname "$0")/.."

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(build tests sanitize bench)
wants() { [[ " ${wanted[*]} " == *" $1 "* ]]; }

failed=()
step() {
  echo
  echo "=== $*"
  local start=$SECONDS
  "$@"
  local rc=$?
  echo "=== exit $rc after $((SECONDS - start)) s: $*"
  [ "$rc" -eq 0 ] || failed+=("$*")
}

# compute-sanitizer over the small GPU tests.
sanitize() {
  local sanitizer
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n1)
  if [ -z "$sanitizer" ]; then
    echo "=== compute-sanitizer not found"
    failed+=("compute-sanitizer not found")
    return
  fi
  # Under the sanitizer XLA allocates every buffer on its own rather than
  # from one pooled block, so an access past a buffer's end is caught.
  export XLA_PYTHON_CLIENT_ALLOCATOR=platform XLA_PYTHON_CLIENT_PREALLOCATE=false
  local small=(python -m pytest -q -x -p no:cacheprovider -o addopts= tests/test_gpu.py -k small)
  # racecheck and initcheck look at this module's kernels only (their names
  # contain jax_gmm), not at XLA's or CUB's.
  local ours=()
  if "$sanitizer" --help | grep -q -- '--kernel-name'; then ours=(--kernel-name kns=jax_gmm); fi
  step "$sanitizer" --tool memcheck --error-exitcode 1 "${small[@]}"
  step "$sanitizer" --tool racecheck --error-exitcode 1 ${ours[@]+"${ours[@]}"} "${small[@]}"
  step "$sanitizer" --tool initcheck --error-exitcode 1 ${ours[@]+"${ours[@]}"} "${small[@]}"
  unset XLA_PYTHON_CLIENT_ALLOCATOR XLA_PYTHON_CLIENT_PREALLOCATE
}

main() {
  step nvidia-smi

  if wants build; then
    # Only this GPU's architecture (e.g. 90): a shorter build, and a plain
    # number where a CMake list ("80;90") would have to pass through pip.
    local arch
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d '.[:space:]')
    step pip install --no-build-isolation --no-deps -v -e . \
      --config-settings=cmake.define.JAX_GMM_CUDA=ON \
      --config-settings=cmake.define.JAX_GMM_CUDA_ARCHITECTURES="$arch"
  fi

  step python -c '
import pprint, jax, jax_gmm
print("devices:", jax.devices())
pprint.pprint(jax_gmm.build_info())
assert jax_gmm.build_info()["cuda"], "the CUDA module did not load"
'

  if wants tests; then step python -m pytest -q -ra -o addopts= tests; fi

  if wants sanitize; then sanitize; fi

  if wants bench && [ -f experiments/benchmark.py ]; then
    step python experiments/benchmark.py --gpu-quick --out experiments/results
  fi

  echo
  if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: all steps passed"
  else
    echo "gpu_check: ${#failed[@]} step(s) failed:"
    printf '  %s\n' "${failed[@]}"
  fi
  [ ${#failed[@]} -eq 0 ]
}

device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 |
         tr -cs 'A-Za-z0-9' '_')
device=${device%_}
mkdir -p experiments/results
log="experiments/results/gpu_check_${device:-unknown}_$(date +%Y%m%d_%H%M%S).log"
main 2>&1 | tee "$log"  # with pipefail, the status is main's
status=$?
echo "log: $log"
# On the lent device machine, what lands in $OUT comes back to the session.
if [ -n "${OUT:-}" ]; then cp "$log" experiments/results/benchmark_gpu* "$OUT"/ 2>/dev/null; fi
exit "$status"
