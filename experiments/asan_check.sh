#!/usr/bin/env bash
# The native CPU modules under AddressSanitizer: builds _cpu and _layout with
# -fsanitize=address in a folder of their own, and runs pytest (by default
# the whole suite; arguments replace `tests`) with jax_gmm imported from a
# copy of the package beside them, in the test processes and in every
# Python process they start (tests/test_crashes.py runs its inputs in
# subprocesses). An out-of-bounds read or write, a use after free or a
# double free fails the run, and ASan's report is kept in the log folder.
#
# Usage (from an environment with the package installed, e.g. the README's):
#   bash experiments/asan_check.sh                           # the suite, ~17 min on 2 cores
#   HYPOTHESIS_PROFILE=long bash experiments/asan_check.sh tests/test_properties.py
#
# Leaks are not checked: the Python interpreter itself leaks by design.
set -euo pipefail
cd "$(dirname "$0")/.."

work="${ASAN_WORK:-${TMPDIR:-/tmp}/jax_gmm-asan}"
build="$work/build" pkg="$work/pkg" logs="$work/logs"
python="$(command -v python)"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJAX_GMM_CUDA=OFF \
  -DPython_EXECUTABLE="$python" \
  -DCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer" \
  -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address" >/dev/null
cmake --build "$build" -j"$(nproc)" --target _cpu _layout

rm -rf "$pkg" "$logs"
mkdir -p "$pkg" "$logs"
cp -r jax_gmm "$pkg/"
find "$pkg/jax_gmm" -name '*.so' -delete
cp "$build"/_cpu*.so "$build"/_layout*.so "$pkg/jax_gmm/"
# Python runs sitecustomize after the site-packages .pth files, one of which
# (the editable install's) puts a finder first that would import the
# installed, unsanitized modules; and a checkout's own jax_gmm folder, on
# sys.path as the working directory, holds no modules. So: drop that finder,
# and find jax_gmm in this copy before anything on sys.path.
cat >"$pkg/sitecustomize.py" <<PY
import importlib.machinery
import sys


class SanitizedJaxGmm:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "jax_gmm":
            return importlib.machinery.PathFinder.find_spec(name, ["$pkg"])
        return None


sys.meta_path[:] = [SanitizedJaxGmm] + [
    f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"]
PY

# libasan must be loaded before anything it intercepts (Python is not
# built with it); libstdc++ too, so that ASan sees its operator new.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)"
export ASAN_OPTIONS="detect_leaks=0:log_path=$logs/asan"
export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
export JAX_PLATFORMS=cpu

"$python" - "$pkg" <<'PY'
import os, sys
import jax_gmm
from jax_gmm import _cpu
pkg = os.path.realpath(sys.argv[1])
assert os.path.realpath(_cpu.__file__).startswith(pkg), f"{_cpu.__file__} is not the sanitized build"
print("sanitized module:", _cpu.__file__)
PY

status=0
"$python" -m pytest -q -p no:cacheprovider "${@:-tests}" || status=$?
if compgen -G "$logs/asan*" >/dev/null; then
  echo "AddressSanitizer reports in $logs:"
  head -n 40 "$logs"/asan*
  exit 1
fi
echo "AddressSanitizer: no reports"
exit "$status"
