#!/usr/bin/env bash
# The C example of README.md (its first ```c block) must compile without
# warnings against build/libsafetensors.a and run successfully.
set -u
ROOT=${ST_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
BUILD=${ST_BUILD:-$ROOT/build}
PY=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

"$PY" - "$ROOT/README.md" "$tmp/example.c" <<'PYEOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
blocks = re.findall(r"^```c\n(.*?)^```", text, re.S | re.M)
open(sys.argv[2], "w").write(blocks[0] if blocks else "")
PYEOF
if [ -s "$tmp/example.c" ]; then ok; else bad "README.md has no \`\`\`c block"; fi

cc=${CC:-cc}
san=
if [ "${ST_SAN:-0}" = 1 ]; then
    # The sanitizer build's library needs the sanitizer runtime.
    command -v clang >/dev/null 2>&1 && cc=clang
    san="-fsanitize=address,undefined"
fi
if $cc -std=c11 -Wall -Wextra -Werror -pedantic $san -I"$ROOT/include" -o "$tmp/example" \
    "$tmp/example.c" "$BUILD/libsafetensors.a" -lcrypto -lz -lpthread -lm 2>"$tmp/cc.log"; then
    ok
else
    bad "README example does not compile"; cat "$tmp/cc.log" >&2
fi
if [ -x "$tmp/example" ]; then
    (cd "$tmp" && ./example >"$tmp/run.out" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ]; then ok; else bad "README example exits $rc"; cat "$tmp/run.out" >&2; fi
    # The example prints what it read back; it must have found the tensor.
    if grep -q "layer.weight" "$tmp/run.out"; then ok; else bad "README example output"; cat "$tmp/run.out" >&2; fi
fi
echo "# passed $pass failed $fail"
[ "$fail" -eq 0 ]
