#!/usr/bin/env bash
# `safetensors convert --dtype`: values bit for bit against independent
# NumPy computations (F32 -> F16 by NumPy's astype, F32 -> BF16 and F8_E4M3
# by explicit formulas), integer/BOOL tensors and metadata unchanged,
# --only/--exclude/--saturate, MX kinds kept unless named, tensors larger
# than the writer's buffer with odd sizes (element cut at chunk edges),
# canonical output, failures leave no output, bounded memory.
# Env (tests/run-suite.sh): ST_BIN ST_ROOT PYTHON ST_SAN.
set -u
ROOT=${ST_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${ST_BIN:-$ROOT/build/safetensors}
PY=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { local name=$1; shift; if "$@"; then ok; else bad "$name"; fi; }
run() { "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?; }
expect() {
    local want=$1 name=$2; shift 2
    run "$@"
    if [ "$rc" -eq "$want" ]; then ok; else
        bad "$name: exit $rc, want $want"; sed 's/^/    err: /' "$tmp/err" | head -5 >&2; fi
}

if ! "$PY" -c "import numpy" 2>/dev/null; then
    echo "# numpy not available in $PY: skipped"
    echo "# passed 0 failed 0"
    exit 0
fi

# A tiny reader/writer in Python (independent of the library) for the checks.
cat >"$tmp/st.py" <<'EOF'
import json, struct, sys
import numpy as np
NP = {"F64": "<f8", "F32": "<f4", "F16": "<u2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
      "I16": "<i2", "U16": "<u2", "I8": "i1", "U8": "u1", "BOOL": "u1", "F8_E4M3": "u1",
      "F8_E5M2": "u1", "F8_E8M0": "u1", "F4": "u1"}
def write(path, tensors, meta=None):
    hdr, off, blobs = {}, 0, []
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, (dt, shape, raw) in tensors.items():
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw); blobs.append(raw)
    h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)
def read(path):
    with open(path, "rb") as f: data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n]); base = 8 + n
    meta = hdr.pop("__metadata__", None)
    out = {k: (v["dtype"], v["shape"], data[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
           for k, v in hdr.items()}
    return out, meta
def bf16(bits):  # RNE from F32 bits, NaN -> 0x7FC0 | sign
    b = bits.astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    r[nan] = ((bits[nan] >> 16) & 0x8000).astype(np.uint16) | 0x7FC0
    return r
EOF

# ---------------------------------------------------------------- inputs
"$PY" - "$tmp" <<'EOF' || { echo "# input generation failed"; echo "# passed 0 failed 1"; exit 1; }
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
d = sys.argv[1]
rng = np.random.default_rng(7)
# weights-like values plus every special class
w = rng.standard_normal(1_000_003).astype(np.float32)
sp = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65519.99, 65520, 1e-8, -3e-8,
               5.960464477539063e-08, 2.980232238769531e-08, 1e30, -1e30], dtype=np.float32)
w[:len(sp)] = sp
w[-3] = np.frombuffer(np.uint32(0xFFA12345).tobytes(), np.float32)[0]
big = rng.standard_normal(300_001).astype(np.float32) * 1000
tensors = {
    "model.w": ("F32", [1_000_003], w.tobytes()),
    "model.big": ("F32", [300_001], big.tobytes()),
    "model.odd_f8": ("F8_E5M2", [3], bytes([0x3C, 0xBC, 0x01])),
    "model.f16": ("F16", [5], np.array([1, 2, 3, 4, 5], np.float16).view(np.uint16).tobytes()),
    "model.steps": ("I64", [3], np.array([1, -2, 3], np.int64).tobytes()),
    "model.mask": ("BOOL", [4], bytes([1, 0, 1, 1])),
    "model.f4": ("F4", [4], bytes([0x21, 0xF7])),
    "model.scale": ("F8_E8M0", [2], bytes([127, 130])),
    "cond.bias": ("F32", [2], np.array([1.5, -2.25], np.float32).tobytes()),
}
st.write(d + "/in.safetensors", tensors, {"format": "pt", "note": "x"})
EOF

# ---------------------------------------------------------------- f16
expect 0 "convert --dtype f16" "$BIN" convert "$tmp/in.safetensors" "$tmp/f16.safetensors" --dtype f16
check "summary: converted count" grep -q "^converted 4 tensors to F16 (1 F8_E5M2, 3 F32)" "$tmp/out"
check "summary: size line" grep -qE "^size: .* -> .*\(-[0-9.]+%\)" "$tmp/out"
check "no progress bar off a terminal" [ ! -s "$tmp/err" ]
expect 0 "check the output" "$BIN" check "$tmp/f16.safetensors"
check "f16 values and the rest" "$PY" - "$tmp" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
d = sys.argv[1]
a, ma = st.read(d + "/in.safetensors"); b, mb = st.read(d + "/f16.safetensors")
ok = ma == mb and set(a) == set(b)
for k in ("model.w", "model.big", "cond.bias"):
    x = np.frombuffer(a[k][2], np.float32)
    with np.errstate(all="ignore"):
        want = x.astype(np.float16).view(np.uint16).copy()  # NumPy: RNE, overflow to Inf
    nan = np.isnan(x)
    want[nan] = np.where(np.signbit(x[nan]), 0xFE00, 0x7E00)
    got = np.frombuffer(b[k][2], np.uint16)
    ok &= b[k][0] == "F16" and b[k][1] == a[k][1] and np.array_equal(got, want)
# F8_E5M2 is the top byte of F16: exact
ok &= b["model.odd_f8"][0] == "F16" and np.frombuffer(b["model.odd_f8"][2], np.uint16).tolist() == [0x3C00, 0xBC00, 0x0100]
for k in ("model.f16", "model.steps", "model.mask", "model.f4", "model.scale"):
    ok &= a[k] == b[k]
sys.exit(0 if ok else 1)
EOF

# canonical: converting the output again without --dtype changes nothing
expect 0 "re-convert without --dtype" "$BIN" convert "$tmp/f16.safetensors" "$tmp/again.safetensors"
check "output is canonical" cmp -s "$tmp/f16.safetensors" "$tmp/again.safetensors"

# ---------------------------------------------------------------- bf16, --only/--exclude
expect 0 "convert --dtype BF16 --only --exclude" "$BIN" convert "$tmp/in.safetensors" \
    "$tmp/bf16.safetensors" --dtype BF16 --only 'model.w' --only 'model.odd_f8' \
    --only 'model.f1?' --only 'cond.*' --only 'model.big' --exclude '*.big'
check "bf16 summary" grep -q "^converted 4 tensors to BF16 (1 F8_E5M2, 1 F16, 2 F32)" "$tmp/out"
check "bf16 values, selection" "$PY" - "$tmp" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
d = sys.argv[1]
a, _ = st.read(d + "/in.safetensors"); b, _ = st.read(d + "/bf16.safetensors")
x = np.frombuffer(a["model.w"][2], np.uint32)
ok = b["model.w"][0] == "BF16" and np.array_equal(np.frombuffer(b["model.w"][2], np.uint16), st.bf16(x))
ok &= a["model.big"] == b["model.big"]            # excluded
h = np.frombuffer(a["model.f16"][2], np.float16).astype(np.float32).view(np.uint32)
ok &= np.array_equal(np.frombuffer(b["model.f16"][2], np.uint16), st.bf16(h))
ok &= a["model.f4"] == b["model.f4"] and a["model.scale"] == b["model.scale"]  # MX kept
sys.exit(0 if ok else 1)
EOF

# MX kinds are converted when --only names them: F4 low nibble first
expect 0 "convert F4 by name" "$BIN" convert "$tmp/in.safetensors" "$tmp/f4.safetensors" \
    --dtype f32 --only 'model.f4' --only 'model.scale'
check "F4 and E8M0 decoded" "$PY" - "$tmp" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
b, _ = st.read(sys.argv[1] + "/f4.safetensors")
ok = np.frombuffer(b["model.f4"][2], np.float32).tolist() == [0.5, 1.0, 6.0, -6.0]
ok &= np.frombuffer(b["model.scale"][2], np.float32).tolist() == [1.0, 8.0]
ok &= b["model.w"][0] == "F32"
sys.exit(0 if ok else 1)
EOF

# sub-byte and 8-bit sources large enough to be cut by the writer's buffer
# at odd places: decoded element by element in Python (own tables)
"$PY" - "$tmp" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
rng = np.random.default_rng(11)
n4, n6, n8 = 3_000_002, 1_000_004, 777_777
st.write(sys.argv[1] + "/sub.safetensors", {
    "a.f4": ("F4", [n4], rng.integers(0, 256, n4 // 2, dtype=np.uint8).tobytes()),
    "b.f6": ("F6_E3M2", [n6], rng.integers(0, 256, n6 * 6 // 8, dtype=np.uint8).tobytes()),
    "c.f8": ("F8_E4M3", [n8], rng.integers(0, 256, n8, dtype=np.uint8).tobytes()),
    "d.pad": ("U8", [3], b"abc"),
})
EOF
for t in f32 f16; do
    expect 0 "decode F4/F6/F8 to $t" "$BIN" convert "$tmp/sub.safetensors" "$tmp/sub-$t.safetensors" \
        --dtype "$t" --only 'a.*' --only 'b.*' --only 'c.*'
    check "F4/F6/F8 decoded to $t" "$PY" - "$tmp" "$t" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
a, _ = st.read(sys.argv[1] + "/sub.safetensors"); b, _ = st.read(sys.argv[1] + "/sub-%s.safetensors" % sys.argv[2])
def table(ebits, mbits, bias, nan_allones=False):
    out = []
    for c in range(1 << (1 + ebits + mbits)):
        s, e, m = c >> (ebits + mbits), (c >> mbits) & ((1 << ebits) - 1), c & ((1 << mbits) - 1)
        v = (m / (1 << mbits)) * 2.0 ** (1 - bias) if e == 0 else (1 + m / (1 << mbits)) * 2.0 ** (e - bias)
        if nan_allones and e == (1 << ebits) - 1 and m == (1 << mbits) - 1:
            v = np.nan
        out.append(-v if s else v)
    return np.array(out)
raw4 = np.frombuffer(a["a.f4"][2], np.uint8)
codes4 = np.empty(raw4.size * 2, np.uint8); codes4[0::2] = raw4 & 15; codes4[1::2] = raw4 >> 4
raw6 = np.frombuffer(a["b.f6"][2], np.uint8).reshape(-1, 3).astype(np.uint32)
v = raw6[:, 0] | raw6[:, 1] << 8 | raw6[:, 2] << 16
codes6 = np.stack([(v >> (6 * k)) & 63 for k in range(4)], axis=1).reshape(-1)
codes8 = np.frombuffer(a["c.f8"][2], np.uint8)
dt = np.float32 if sys.argv[2] == "f32" else np.float16
ok = True
for k, codes, tab in (("a.f4", codes4, table(2, 1, 1)), ("b.f6", codes6, table(3, 2, 3)),
                      ("c.f8", codes8, table(4, 3, 7, True))):
    want = tab[codes].astype(dt)
    got = np.frombuffer(b[k][2], dt)
    ok &= got.size == want.size and np.array_equal(got, want, equal_nan=True)
    ok &= np.array_equal(np.signbit(got), np.signbit(want))  # signs of zeros too
ok &= a["d.pad"] == b["d.pad"]
sys.exit(0 if ok else 1)
EOF
done

# --ema only with --dtype: --only matches the name written (the weight's),
# and the EMA twin's values are the ones converted
"$PY" - "$tmp" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
st.write(sys.argv[1] + "/ema.safetensors", {
    "model.diffusion_model.out.weight": ("F32", [2], np.array([1, 2], np.float32).tobytes()),
    "model_ema.diffusion_modeloutweight": ("F32", [2], np.array([3, 4], np.float32).tobytes()),
    "model_ema.decay": ("F32", [], np.array([0.9999], np.float32).tobytes()),
    "model_ema.num_updates": ("I32", [], np.array([7], np.int32).tobytes()),
})
EOF
expect 0 "--ema only --dtype f16 --only" "$BIN" convert "$tmp/ema.safetensors" "$tmp/ema16.safetensors" \
    --ema only --dtype f16 --only 'model.diffusion_model.*'
check "--ema only: the EMA values, converted under the weight's name" "$PY" - "$tmp" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
b, _ = st.read(sys.argv[1] + "/ema16.safetensors")
w = b.get("model.diffusion_model.out.weight")
ok = w is not None and w[0] == "F16" and np.frombuffer(w[2], np.float16).tolist() == [3.0, 4.0]
sys.exit(0 if ok else 1)
EOF

# ---------------------------------------------------------------- fp8 overflow
for sat in 0 1; do
    extra=(); [ "$sat" = 1 ] && extra=(--saturate)
    expect 0 "convert f8_e4m3 saturate=$sat" "$BIN" convert "$tmp/in.safetensors" \
        "$tmp/e4m3.safetensors" --dtype f8_e4m3 --only 'model.big' "${extra[@]}"
    check "f8_e4m3 values saturate=$sat" "$PY" - "$tmp" "$sat" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
sat = sys.argv[2] == "1"
a, _ = st.read(sys.argv[1] + "/in.safetensors"); b, _ = st.read(sys.argv[1] + "/e4m3.safetensors")
x = np.frombuffer(a["model.big"][2], np.float32).astype(np.float64)
# reference by search over the 127 finite magnitudes, ties to the even code
mags = np.array([(m / 8) * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
                 for e in range(16) for m in range(8)][:127])
ax = np.abs(x)
hi = np.clip(np.searchsorted(mags, ax), 1, 126)
lo = hi - 1
dl, dh = ax - mags[lo], mags[hi] - ax
code = np.where(dl < dh, lo, np.where(dh < dl, hi, np.where(lo % 2 == 0, lo, hi)))
code = np.where(ax >= mags[126], 126, code)
over = ax > 464  # 448 + half an ulp: the tie goes to 448 (even code 0x7E)
code = np.where(over, 126 if sat else 127, code)
want = (code | np.where(np.signbit(x), 0x80, 0)).astype(np.uint8)
got = np.frombuffer(b["model.big"][2], np.uint8)
sys.exit(0 if b["model.big"][0] == "F8_E4M3" and np.array_equal(got, want) else 1)
EOF
done

# ---------------------------------------------------------------- progress bar
# only on a terminal (script(1) provides one), not with --quiet
if command -v script >/dev/null 2>&1; then
    script -qec "'$BIN' convert '$tmp/in.safetensors' '$tmp/tty.safetensors' --dtype f16" \
        /dev/null >"$tmp/tty.out" 2>&1
    check "progress bar on a terminal" grep -q "convert .*%" "$tmp/tty.out"
    script -qec "'$BIN' convert -q '$tmp/in.safetensors' '$tmp/tty.safetensors' --dtype f16" \
        /dev/null >"$tmp/tty.out" 2>&1
    check "--quiet: no progress bar" sh -c "! grep -q 'convert .*%' '$tmp/tty.out'"
    check "--quiet: still the summary" grep -q "^converted 4 tensors" "$tmp/tty.out"
fi

# ---------------------------------------------------------------- failures
mkdir -p "$tmp/fail"
expect 2 "unknown dtype" "$BIN" convert "$tmp/in.safetensors" "$tmp/fail/o.safetensors" --dtype f7
check "unknown dtype: says so" grep -q "unknown or unsupported --dtype 'f7'" "$tmp/err"
expect 2 "no encoder to F4" "$BIN" convert "$tmp/in.safetensors" "$tmp/fail/o.safetensors" --dtype f4
expect 2 "integer target refused" "$BIN" convert "$tmp/in.safetensors" "$tmp/fail/o.safetensors" --dtype i8
expect 2 "--saturate needs --dtype" "$BIN" convert "$tmp/in.safetensors" "$tmp/fail/o.safetensors" --saturate
expect 2 "--only needs --dtype" "$BIN" convert "$tmp/in.safetensors" "$tmp/fail/o.safetensors" --only x
check "failures leave no output" [ -z "$(ls -A "$tmp/fail")" ]
expect 0 "--help mentions --dtype" "$BIN" convert --help
check "--help text" grep -q -- "--saturate" "$tmp/out"

# ---------------------------------------------------------------- memory bound
# a 96 MiB F32 file converts with a few MiB of buffers (not under ASan)
if [ "${ST_SAN:-0}" != 1 ] && [ -x /usr/bin/time ]; then
    "$PY" - "$tmp" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np, st
n = 8 * 1024 * 1024
st.write(sys.argv[1] + "/big.safetensors",
         {"a": ("F32", [n], np.ones(n, np.float32).tobytes()),
          "b": ("F32", [n, 2], np.full(2 * n, 2.5, np.float32).tobytes())})
EOF
    /usr/bin/time -f "%M" -o "$tmp/rss" "$BIN" convert "$tmp/big.safetensors" "$tmp/big16.safetensors" \
        --dtype f16 >/dev/null 2>&1
    rss=$(tail -n 1 "$tmp/rss")
    echo "# convert --dtype f16 of a 96 MiB file: peak RSS $rss KiB"
    check "peak RSS under 32 MiB for a 96 MiB file ($rss KiB)" [ "$rss" -lt 32768 ]
    check "big output size" [ "$(stat -c %s "$tmp/big16.safetensors")" -lt 51000000 ]
else
    echo "# RSS check skipped (sanitizer build or no /usr/bin/time)"
fi

echo "# passed $pass failed $fail"
[ "$fail" -eq 0 ]
