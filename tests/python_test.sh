#!/usr/bin/env bash
# Runs the Python package's tests (python/tests: ours and the reference's,
# ported) with pytest against the extension of $ST_BUILD (make python), and
# prints "# passed N failed M".
#
# Under ST_SAN=1 the extension is the ASan+UBSan build, loaded into Debian's
# unsanitized interpreter: the sanitizer runtime is LD_PRELOADed (clang's
# shared runtime, the extension is linked with -shared-libasan; gcc's
# libasan otherwise), and leak detection is off, since CPython and torch
# keep allocations alive until exit on purpose.
set -u
root=${ST_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
build=${ST_BUILD:-$root/build}
python=${PYTHON:-/usr/bin/python3}
pkg="$build/python"
if ! ls "$pkg"/safetensors_c/_safetensors_c*.so >/dev/null 2>&1; then
    echo "python_test: no extension in $pkg (make python)" >&2
    echo "# passed 0 failed 1"
    exit 1
fi
if ! "$python" -c 'import pytest' 2>/dev/null; then
    echo "python_test: pytest is missing (python3-pytest; scripts/deps.sh)" >&2
    echo "# passed 0 failed 1"
    exit 1
fi
export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
export ST_CONFORMANCE="${ST_CONFORMANCE:-$root/../shared/conformance}"
export ST_BIN="${ST_BIN:-$build/safetensors}"
preload=""
if [ "${ST_SAN:-0}" = 1 ]; then
    so="$pkg"/safetensors_c/_safetensors_c*.so
    # shellcheck disable=SC2086
    rt=$(ldd $so 2>/dev/null | awk '/libasan|libclang_rt\.asan/ && $3 ~ /^\// {print $3; exit}')
    if [ -z "$rt" ] && ldd $so 2>/dev/null | grep -q libclang_rt.asan; then
        rt=$(clang -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null)
    fi
    if [ ! -f "$rt" ]; then
        echo "python_test: no ASan runtime to preload" >&2
        echo "# passed 0 failed 1"
        exit 1
    fi
    preload="$rt"
    export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:handle_segv=1"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 2
LD_PRELOAD="$preload" "$python" -m pytest -q -p no:cacheprovider \
    --junitxml="$tmp/report.xml" "$root/python/tests" "$@"
rc=$?
# pytest: 0 all passed, 1 some failed, 5 nothing collected (a failure here).
counts=$("$python" - "$tmp/report.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 0"); sys.exit()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
t = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skip = sum(int(s.get("skipped", 0)) for s in suites)
print(t - bad - skip, bad)
PY
)
passed=${counts% *} failed=${counts#* }
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "# passed $passed failed $failed"
[ "$failed" -eq 0 ]
