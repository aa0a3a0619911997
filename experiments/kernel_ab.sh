#!/usr/bin/env bash
# A/B of the CPU grid kernels' per-point work between a git ref and the
# working tree, outside JAX: both copies of cuda/ are compiled into one
# program (kernel_ab/walks.cc, each in a namespace of its own) that times
# them in alternation on the same inputs, round by round. On the shared
# 2-core machine, where whole calls through JAX vary by tens of percent
# from minute to minute, the per-round ratios of this harness stayed within
# a few percent, which makes effects of 5-10% visible; confirm a gain in
# JAX afterwards, and check the bits (a faster walk must give the same
# results).
#
# Usage: bash experiments/kernel_ab.sh [REF] [ISA] [MODE] [SIGMA...]
#   REF   the base, default HEAD;  ISA: baseline, avx2 (default) or avx512
#   MODE  0 clip, 1 clip + forward add, 2 clip + backward gather (default)
#   SIGMA default 0.5 1 2
# Takes the compile flags of the ISA's kernels from a CMake configure of
# its own (CMakeLists.txt), so they match the module's.
set -euo pipefail
cd "$(dirname "$0")/.."

ref="${1:-HEAD}" isa="${2:-avx2}" mode="${3:-2}"
shift $(($# < 3 ? $# : 3))
[ $# -gt 0 ] || set -- 0.5 1 2  # the sigmas
work="${KERNEL_AB_WORK:-${TMPDIR:-/tmp}/jax_gmm-kernel-ab}"
rm -rf "$work/base" && mkdir -p "$work/base"
git archive "$ref" cuda | tar -x -C "$work/base"
cmake -S . -B "$work/build" -G Ninja -DJAX_GMM_CUDA=OFF \
  -DPython_EXECUTABLE="$(command -v python)" >/dev/null
# The flags of one kernel source's compile in this ISA's build, less the
# file names and defines.
ninja -C "$work/build" -t commands _cpu >"$work/commands"
flags=$(grep -- "-DJAX_GMM_ISA=$isa .*grid_forward" "$work/commands" |
  sed -E 's/^[^ ]+//; s/ -MD -MT [^ ]+ -MF [^ ]+//; s/ -o [^ ]+ -c [^ ]+$//; s/ -[DI][^ ]+//g; s/^ //')
compile() {  # namespace, cuda folder
  c++ $flags -DJAX_GMM_ISA="$1" -I"$2" -c experiments/kernel_ab/walks.cc -o "$work/$1.o" \
    -Wno-subobject-linkage
}
compile va "$work/base/cuda" &
compile vb cuda &
wait
c++ -O2 experiments/kernel_ab/main.cc "$work/va.o" "$work/vb.o" -o "$work/kernel_ab"
echo "base: $ref; new: the working tree; $isa build ($flags)"
"$work/kernel_ab" "$mode" "$@"
