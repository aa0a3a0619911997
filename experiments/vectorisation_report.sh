#!/usr/bin/env bash
# Which loops of the CPU kernels GCC vectorises in each instruction-set build
# (CMakeLists.txt: baseline x86-64, avx2, avx512), and the loops that only a
# wider build vectorises. The benchmark machines of most sessions ran the
# AVX-512 build, which hid that the footprints' loops were scalar in the
# other two (an int64-to-float conversion, which x86 has in vectors only
# with AVX-512DQ) until the eighteenth session: run this after changing a
# kernel's loops.
#
# Usage: bash experiments/vectorisation_report.sh   (~2 min on 2 cores)
# Configures a build folder of its own, compiles every kernel source once
# per build with -fopt-info-vec-optimized (objects discarded), and prints
# file:line of each loop vectorised with AVX-512 but not AVX2, and with AVX2
# but not baseline. Some are expected: scatters and 64-bit integer
# arithmetic have no AVX2 vector form, and GCC's cost model differs per
# width.
set -euo pipefail
cd "$(dirname "$0")/.."

work="${VEC_WORK:-${TMPDIR:-/tmp}/jax_gmm-vec}"
mkdir -p "$work"
cmake -S . -B "$work/build" -G Ninja -DJAX_GMM_CUDA=OFF \
  -DPython_EXECUTABLE="$(command -v python)" >/dev/null

for isa in baseline avx2 avx512; do
  ninja -C "$work/build" -t commands _cpu | grep -- "-DJAX_GMM_ISA=$isa " |
    sed -E 's/ -MD -MT [^ ]+ -MF [^ ]+//; s/ -o [^ ]+\.o / -o \/dev\/null /' >"$work/$isa.cmds"
  # One compile per line, one per core at a time; each prints the vectorised loops.
  tr '\n' '\0' <"$work/$isa.cmds" |
    xargs -0 -P "$(nproc)" -I{} sh -c '{} -fopt-info-vec-optimized 2>&1' |
    grep "loop vectorized" | grep -o 'cuda/[A-Za-z0-9_/]*\.[a-z]*:[0-9]*' |
    sort -u >"$work/$isa.loops"
  echo "$isa: $(wc -l <"$work/$isa.loops") vectorised loops"
done

echo "vectorised with AVX-512 but not AVX2:"
comm -13 "$work/avx2.loops" "$work/avx512.loops" | sed 's/^/  /'
echo "vectorised with AVX2 but not baseline:"
comm -13 "$work/baseline.loops" "$work/avx2.loops" | sed 's/^/  /'
