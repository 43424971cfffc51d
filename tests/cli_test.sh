#!/usr/bin/env bash
# Tests of the `safetensors` CLI: dispatcher, exit codes, --help of every
# command, check over the conformance corpus (text and --json), info and ls
# on the sample and the corpus, convert against the reference writer's
# canonical files, convert's safety rules, and `make install` into a DESTDIR.
# Env (tests/run-suite.sh): ST_BIN ST_ROOT ST_BUILD ST_CONFORMANCE PYTHON ST_SAN.
set -u
ROOT=${ST_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${ST_BIN:-$ROOT/build/safetensors}
BUILD=${ST_BUILD:-$ROOT/build}
CONF=${ST_CONFORMANCE:-$ROOT/../shared/conformance}
PY=${PYTHON:-/usr/bin/python3}
SAMPLE=$ROOT/examples/sample.safetensors
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
# check NAME CONDITION-COMMAND...: one assertion
check() { local name=$1; shift; if "$@"; then ok; else bad "$name"; fi; }
# run CMD...: runs with stdout/stderr to $tmp/out, $tmp/err; sets $rc
run() { "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?; }
# expect RC NAME CMD...: runs and asserts the exit code
expect() {
    local want=$1 name=$2; shift 2
    run "$@"
    if [ "$rc" -eq "$want" ]; then ok; else
        bad "$name: exit $rc, want $want"; sed 's/^/    err: /' "$tmp/err" | head -5 >&2; fi
}
has() { grep -q -- "$1" "$2"; }
empty() { [ ! -s "$1" ]; }

# ---------------------------------------------------------------- dispatcher
expect 2 "no arguments" "$BIN"
check "no arguments: usage on stderr" has "Usage: safetensors" "$tmp/err"
check "no arguments: nothing on stdout" empty "$tmp/out"
expect 0 "--help" "$BIN" --help
check "--help lists commands" has "Commands:" "$tmp/out"
# Every command the dispatcher lists, so commands added later are covered.
cmds=$(awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}' "$tmp/out")
for c in check info ls convert; do
    check "--help lists $c" grep -qx "$c" <<<"$cmds"
done
expect 0 "--version" "$BIN" --version
check "--version prints the version" grep -qE '^safetensors [0-9]+\.[0-9]+\.[0-9]+' "$tmp/out"
expect 2 "unknown command" "$BIN" frobnicate
check "unknown command named on stderr" has "unknown command 'frobnicate'" "$tmp/err"
check "unknown command: usage on stderr" has "Usage: safetensors" "$tmp/err"
expect 2 "unknown global option" "$BIN" --frob
expect 2 "help of an unknown command" "$BIN" help frobnicate
expect 0 "help without a command" "$BIN" help
for c in $cmds; do
    expect 0 "$c --help" "$BIN" "$c" --help
    check "$c --help: usage on stdout" grep -q "^Usage: safetensors $c" "$tmp/out"
    check "$c --help: nothing on stderr" empty "$tmp/err"
    check "$c --help fits 80 columns" awk 'length($0) > 80 {exit 1}' "$tmp/out"
    expect 0 "help $c" "$BIN" help "$c"
    check "help $c = $c --help" grep -q "^Usage: safetensors $c" "$tmp/out"
    check "man page documents $c" grep -q "^\.SS \"$c\b" "$ROOT/doc/safetensors.1"
    check "README lists $c" grep -q "^| \`$c\b" "$ROOT/README.md"
    expect 2 "$c with a bad option" "$BIN" "$c" --no-such-option
    check "$c bad option: usage on stderr" has "Usage: safetensors $c" "$tmp/err"
done

# ---------------------------------------------------------------- check
expect 0 "check sample" "$BIN" check "$SAMPLE"
check "check sample says OK" grep -q "sample.safetensors: OK (15 tensors)" "$tmp/out"
expect 2 "check without FILE" "$BIN" check
expect 2 "check missing file" "$BIN" check "$tmp/missing.safetensors"
check "missing file: io error on stderr" grep -q "^safetensors: .*missing.safetensors: io: " "$tmp/err"
bad_file=$CONF/files/err_offsets_hole.safetensors
expect 1 "check invalid file" "$BIN" check "$bad_file"
check "invalid: code and message" grep -q "err_offsets_hole.safetensors: offsets: ." "$tmp/out"
expect 1 "check valid + invalid" "$BIN" check "$SAMPLE" "$bad_file"
expect 2 "check valid + invalid + missing" "$BIN" check "$SAMPLE" "$bad_file" "$tmp/missing"
expect 2 "check --json missing file" "$BIN" check --json "$tmp/missing"
check "check --json missing: io line" "$PY" -c '
import json,sys
o=json.loads(open(sys.argv[1]).read())
assert o["valid"] is False and o["error"]=="io" and o["tensors"] is None and o["message"]
' "$tmp/out"
expect 2 "check a directory" "$BIN" check "$tmp"
# Paths are bytes: one that is not UTF-8 must still give valid JSON.
weird=$tmp/$'bad\xff\x01name'.safetensors
cp "$SAMPLE" "$weird"
expect 0 "check --json non-UTF-8 path" "$BIN" check --json "$weird"
check "non-UTF-8 path: valid JSON, escaped" "$PY" -c '
import json,sys
raw=open(sys.argv[1],"rb").read()
raw.decode("utf-8")
o=json.loads(raw)
assert o["file"].endswith("bad\ufffd\x01name.safetensors"), o["file"]
assert o["valid"] is True and o["tensors"]==15
' "$tmp/out"

# The whole corpus in one run, mmap and pread: every verdict must be the
# expected code (conformance/README.md's table; duplicate keys are stricter).
for mode in "" --pread; do
    run "$BIN" check --json $mode "$CONF"/files/*.safetensors
    check "corpus check --json $mode exits 1" [ "$rc" -eq 1 ]
    check "corpus check --json $mode verdicts" "$PY" - "$CONF" "$tmp/out" <<'PYEOF'
import json, os, sys
conf, out = sys.argv[1], sys.argv[2]
table = {"HeaderTooSmall": {"header_too_small"}, "HeaderTooLarge": {"header_too_large"},
         "InvalidHeaderLength": {"header_length"}, "InvalidHeader": {"header_utf8"},
         "InvalidHeaderDeserialization": {"header_json", "header_schema"},
         "InvalidOffset": {"offsets"}, "ValidationOverflow": {"overflow"},
         "MisalignedSlice": {"misaligned"}, "TensorInvalidInfo": {"size_mismatch"},
         "MetadataIncompleteBuffer": {"incomplete"}, "OK": {None}}
expected = {}
for line in open(os.path.join(conf, "expected.tsv")).read().splitlines()[1:]:
    case, ref, n = line.split("\t")
    # Repeated keys, tensor fields included, are duplicate_key here.
    strict = case.startswith("dup_") or case.startswith("err_duplicate_")
    want = {"duplicate_key"} if strict else table[ref]
    expected[case] = (want, None if n == "-" else int(n))
seen, errors = set(), []
for line in open(out, encoding="utf-8"):
    o = json.loads(line)
    assert list(o) == ["file", "valid", "error", "message", "tensors"], list(o)
    case = os.path.basename(o["file"])[:-len(".safetensors")]
    seen.add(case)
    want, n = expected[case]
    if o["error"] not in want:
        errors.append("%s: got %s, want %s (%s)" % (case, o["error"], sorted(map(str, want)), o["message"]))
    if o["valid"] != (o["error"] is None):
        errors.append("%s: valid/error disagree" % case)
    if o["error"] is None and (o["tensors"] != n or o["message"] is not None):
        errors.append("%s: tensors %s, want %s" % (case, o["tensors"], n))
    if o["error"] is not None and (o["tensors"] is not None or not o["message"]):
        errors.append("%s: an invalid file needs a message and null tensors" % case)
missing = set(expected) - seen
if missing:
    errors.append("no verdict for %s" % sorted(missing))
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
PYEOF
done
# Text verdicts of invalid files name the code and give a byte offset.
run "$BIN" check "$CONF"/files/err_*.safetensors
check "text verdicts: one line per file" [ "$(wc -l <"$tmp/out")" -eq "$(ls "$CONF"/files/err_*.safetensors | wc -l)" ]
check "text verdict gives an offset" grep -q "err_offsets_hole.safetensors: offsets: .*[0-9]" "$tmp/out"

# ---------------------------------------------------------------- info
expect 0 "info sample" "$BIN" info "$SAMPLE"
check "info: tensors" grep -qE '^Tensors: +15$' "$tmp/out"
size=$("$PY" -c 'import os,sys; print("{:,}".format(os.path.getsize(sys.argv[1])))' "$SAMPLE")
check "info: file size" grep -qF "($size bytes)" "$tmp/out"
check "info: dtypes" grep -qE '^  F16 +10 ' "$tmp/out"
check "info: F32" grep -qE '^  F32 +5 ' "$tmp/out"
check "info: metadata" grep -q '^  ss_network_dim: 4$' "$tmp/out"
check "info: long value starts on its key's line" grep -qE '^  ss_tag_frequency: \{"10_sample' "$tmp/out"
check "info: long value shortened" grep -qE '^      .*\.\.\. \(241 bytes\)$' "$tmp/out"
check "info: fits 80 columns" awk 'length($0) >= 80 {exit 1}' "$tmp/out"
expect 0 "info --json sample" "$BIN" info --json "$SAMPLE"
check "info --json agrees with the header" "$PY" - "$SAMPLE" "$tmp/out" <<'PYEOF'
import json, os, struct, sys
path, out = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
meta = hdr.pop("__metadata__", None)
o = json.load(open(out))
assert o["file"] == path
assert o["file_size"] == len(raw) and o["header_size"] == n
assert o["tensor_count"] == len(hdr) == len(o["tensors"])
assert o["metadata"] == meta
order = sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0])
assert [t["name"] for t in o["tensors"]] == [k for k, _ in order]
params, dtypes = 0, {}
for t in o["tensors"]:
    h = hdr[t["name"]]
    assert t["dtype"] == h["dtype"] and t["shape"] == h["shape"] and t["data_offsets"] == h["data_offsets"]
    p = 1
    for d in t["shape"]:
        p *= d
    params += p
    d = dtypes.setdefault(t["dtype"], {"tensors": 0, "parameters": 0, "bytes": 0})
    d["tensors"] += 1; d["parameters"] += p
    d["bytes"] += t["data_offsets"][1] - t["data_offsets"][0]
assert o["parameters"] == params, (o["parameters"], params)
assert o["dtypes"] == dtypes, (o["dtypes"], dtypes)
PYEOF
expect 1 "info invalid file" "$BIN" info "$bad_file"
check "info invalid: code on stderr" grep -q "^safetensors: .*err_offsets_hole.safetensors: offsets: " "$tmp/err"
expect 2 "info missing file" "$BIN" info "$tmp/missing"
expect 2 "info two files" "$BIN" info "$SAMPLE" "$SAMPLE"
# Every valid corpus file: names, dtypes, shapes and metadata as expected.
check "info --json over the valid corpus" "$PY" - "$BIN" "$CONF" <<'PYEOF'
import json, os, subprocess, sys
binp, conf = sys.argv[1], sys.argv[2]
tensors, meta = {}, {}
for line in open(os.path.join(conf, "expected-tensors.tsv"), encoding="utf-8").read().splitlines()[1:]:
    case, name, dtype, shape, _ = line.split("\t")
    tensors.setdefault(case, []).append((json.loads(name), dtype, json.loads(shape)))
for line in open(os.path.join(conf, "expected-metadata.tsv"), encoding="utf-8").read().splitlines()[1:]:
    case, k, v = line.split("\t")
    meta.setdefault(case, {})[json.loads(k)] = json.loads(v)
bad = 0
for line in open(os.path.join(conf, "expected.tsv")).read().splitlines()[1:]:
    case, ref, n = line.split("\t")
    if ref != "OK" or case.startswith("dup_"):
        continue
    p = subprocess.run([binp, "info", "--json", os.path.join(conf, "files", case + ".safetensors")],
                       capture_output=True)
    try:
        assert p.returncode == 0, p.stderr
        o = json.loads(p.stdout)
        got = sorted((t["name"], t["dtype"], t["shape"]) for t in o["tensors"])
        assert got == sorted(tensors.get(case, [])), (got[:3], sorted(tensors.get(case, []))[:3])
        assert o["tensor_count"] == int(n)
        if case in meta:
            assert o["metadata"] == meta[case], o["metadata"]
        if case in ("valid_metadata_null",) or "metadata" not in case:
            assert o["metadata"] in (None, {}) or case in meta, o["metadata"]
        if case == "valid_metadata_null":
            assert o["metadata"] is None
        if case == "valid_metadata_empty":
            assert o["metadata"] == {}
    except Exception as e:
        bad += 1
        print(case, repr(e)[:300], file=sys.stderr)
sys.exit(1 if bad else 0)
PYEOF

# ---------------------------------------------------------------- info RSS
# info reads only the header: on a sparse 8 GiB file its peak RSS must stay
# under 16 MB + the header size (not for the sanitizer build, whose runtime
# alone is bigger).
if [ "${ST_SAN:-0}" != 1 ]; then
    "$PY" - "$tmp/big.safetensors" <<'PYEOF'
import json, struct, sys
hdr, off = {"__metadata__": {"ss_note": "x" * 100000}}, 0
per = (8 << 30) // 2000
for i in range(2000):
    n = per // 2
    hdr["model.layers.%d.weight" % i] = {"dtype": "F16", "shape": [n], "data_offsets": [off, off + 2 * n]}
    off += 2 * n
raw = json.dumps(hdr).encode()
raw += b" " * (-len(raw) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(raw)) + raw)
    f.truncate(8 + len(raw) + off)

PYEOF
    hsize=$("$PY" -c 'import struct,sys; print(struct.unpack("<Q", open(sys.argv[1],"rb").read(8))[0])' "$tmp/big.safetensors")
    for args in "info" "info --json" "ls"; do
        if [ -x /usr/bin/time ]; then
            /usr/bin/time -f '%M' -o "$tmp/rss" "$BIN" $args "$tmp/big.safetensors" >/dev/null 2>&1
            rc=$?
            kb=$(tail -n 1 "$tmp/rss")
        else
            # Without GNU time: the child's ru_maxrss from Python. It counts
            # the forked Python too (before exec), so it is an upper bound.
            read -r rc kb < <("$PY" -c '
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' \
                "$BIN" $args "$tmp/big.safetensors")
        fi
        check "$args on a sparse 8 GiB file exits 0" [ "$rc" -eq 0 ]
        check "$args peak RSS ${kb} KiB < 16 MiB + header ($hsize bytes)" \
            [ "$((kb * 1024))" -lt "$((16 * 1024 * 1024 + hsize))" ]
        echo "    $args: peak RSS ${kb} KiB on a $(stat -c %s "$tmp/big.safetensors")-byte file, header $hsize bytes"
    done
fi

# ---------------------------------------------------------------- ls
# Text output of every valid corpus file (scalars, empty headers, 2000
# tensors, rank 4096 ...): exit 0, no raw control bytes.
nvalid=0 nfine=0
for f in "$CONF"/files/valid_*.safetensors; do
    nvalid=$((nvalid + 1))
    if "$BIN" ls "$f" >"$tmp/ls.txt" 2>"$tmp/err" && "$BIN" ls --sort size "$f" >/dev/null 2>&1 &&
        "$BIN" info "$f" >"$tmp/info.txt" 2>>"$tmp/err" && [ ! -s "$tmp/err" ] &&
        ! LC_ALL=C grep -q '[[:cntrl:]]' "$tmp/ls.txt" "$tmp/info.txt"; then
        nfine=$((nfine + 1))
    else
        echo "    ls/info text failed on $(basename "$f")" >&2
    fi
done
check "ls and info text on every valid corpus file ($nfine/$nvalid)" [ "$nvalid" -gt 40 -a "$nfine" -eq "$nvalid" ]
expect 0 "ls sample" "$BIN" ls "$SAMPLE"
check "ls: header row" grep -qE '^NAME +DTYPE +SHAPE +SIZE$' "$tmp/out"
check "ls: 15 rows + header + total" [ "$(wc -l <"$tmp/out")" -eq 17 ]
check "ls: full names into a pipe" grep -q '^lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight  *F16  *\[4, 32\]  *256 B$' "$tmp/out"
check "ls: total line" grep -qE '^15 tensors, .* parameters, ' "$tmp/out"
expect 0 "ls glob" "$BIN" ls "$SAMPLE" '*.alpha'
check "ls glob: 5 alphas" [ "$(grep -c '\.alpha ' "$tmp/out")" -eq 5 ]
check "ls glob: nothing else" [ "$(wc -l <"$tmp/out")" -eq 7 ]
check "ls glob: total says of" grep -q '^5 of 15 tensors' "$tmp/out"
expect 0 "ls glob class" "$BIN" ls --json "$SAMPLE" 'lora_[t]e_*'
check "ls glob class: 3 te tensors" "$PY" -c 'import json,sys; a=json.load(open(sys.argv[1])); assert len(a)==3 and all(t["name"].startswith("lora_te_") for t in a), a' "$tmp/out"
expect 0 "ls --json" "$BIN" ls --json "$SAMPLE"
check "ls --json: file order, fields" "$PY" -c '
import json,sys
a=json.load(open(sys.argv[1]))
assert len(a)==15
offs=[t["data_offsets"] for t in a]
assert offs==sorted(offs) and offs[0][0]==0
for t in a:
    assert set(t)=={"name","dtype","shape","data_offsets","bytes"}
    assert t["bytes"]==t["data_offsets"][1]-t["data_offsets"][0]
' "$tmp/out"
expect 0 "ls --sort name" "$BIN" ls --json --sort name "$SAMPLE"
check "ls --sort name: sorted" "$PY" -c '
import json,sys
n=[t["name"].encode() for t in json.load(open(sys.argv[1]))]
assert n==sorted(n) and len(n)==15' "$tmp/out"
expect 0 "ls --sort size" "$BIN" ls --json --sort=size "$SAMPLE"
check "ls --sort size: largest first" "$PY" -c '
import json,sys
b=[t["bytes"] for t in json.load(open(sys.argv[1]))]
assert b==sorted(b,reverse=True) and b[0]>b[-1]' "$tmp/out"
expect 2 "ls --sort bogus" "$BIN" ls --sort bogus "$SAMPLE"
expect 2 "ls three arguments" "$BIN" ls "$SAMPLE" a b
expect 1 "ls invalid file" "$BIN" ls "$bad_file"
# On a terminal, long names are shortened to fit its width.
if command -v script >/dev/null 2>&1; then
    COLUMNS=60 script -qec "stty cols 60 2>/dev/null; '$BIN' ls '$SAMPLE'" /dev/null >"$tmp/tty" 2>&1 </dev/null
    tr -d '\r' <"$tmp/tty" >"$tmp/tty2"
    check "ls on a 60-column tty: rows fit" awk 'length($0) > 60 {exit 1}' "$tmp/tty2"
    check "ls on a tty: names elided" grep -q '\.\.\..*lora_down.weight' "$tmp/tty2"
fi
# Names with NUL and other control bytes: JSON round trip, glob over them.
"$PY" - "$tmp/names.safetensors" <<'PYEOF'
import json, struct, sys
names = ["a\u0000b", "tab\there", "\u00e9t\u00e9", "plain"]
hdr, off = {"__metadata__": {"note": "line1\nline2\u001b[31m", "big": "\u00e9" * 3000,
                              "k" * 150: "v"}}, 0
for n in names:
    hdr[n] = {"dtype": "U8", "shape": [1], "data_offsets": [off, off + 1]}; off += 1
raw = json.dumps(hdr).encode()
raw += b" " * (-len(raw) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(raw)) + raw + bytes(range(off)))
PYEOF
expect 0 "ls --json control-byte names" "$BIN" ls --json "$tmp/names.safetensors"
check "control-byte names round-trip" "$PY" -c '
import json,sys
a=json.load(open(sys.argv[1]))
assert [t["name"] for t in a]==["a\x00b","tab\there","\u00e9t\u00e9","plain"], a' "$tmp/out"
expect 0 "ls glob over a NUL name" "$BIN" ls --json "$tmp/names.safetensors" 'a?b'
check "glob ? matches the NUL byte" "$PY" -c '
import json,sys; a=json.load(open(sys.argv[1])); assert [t["name"] for t in a]==["a\x00b"], a' "$tmp/out"
expect 0 "ls text control-byte names" "$BIN" ls "$tmp/names.safetensors"
check "ls text escapes control bytes" grep -q '^a\\x00b ' "$tmp/out"
check "ls text: no raw control bytes" "$PY" -c '
import sys; d=open(sys.argv[1],"rb").read(); assert not any(c<32 and c!=10 for c in d)' "$tmp/out"
expect 0 "info with odd metadata" "$BIN" info "$tmp/names.safetensors"
check "info: no raw control bytes" "$PY" -c '
import sys; d=open(sys.argv[1],"rb").read(); assert not any(c<32 and c!=10 for c in d)' "$tmp/out"
check "info: newline in a value escaped" grep -qF '  note: line1\x0aline2\x1b[31m' "$tmp/out"
check "info: long UTF-8 value cut" grep -qF '... (6,000 bytes)' "$tmp/out"
check "info: UTF-8 lines under 80 columns" "$PY" -c '
import sys
for l in open(sys.argv[1], encoding="utf-8"):
    assert len(l.rstrip("\n")) < 80 or l.startswith("  kkkk"), l' "$tmp/out"
expect 0 "info --json with odd metadata" "$BIN" info --json "$tmp/names.safetensors"
check "info --json: metadata exact" "$PY" -c '
import json,sys
m=json.load(open(sys.argv[1]))["metadata"]
assert m=={"note":"line1\nline2\x1b[31m","big":"\u00e9"*3000,"k"*150:"v"}, m' "$tmp/out"

# ---------------------------------------------------------------- convert
expect 0 "convert sample" "$BIN" convert "$SAMPLE" "$tmp/conv.safetensors"
check "convert reports what it wrote" grep -qE "wrote .*conv.safetensors: 15 tensors, 11 metadata keys" "$tmp/out"
check "convert of the (canonical) sample is identical" cmp -s "$SAMPLE" "$tmp/conv.safetensors"
expect 0 "check converted" "$BIN" check "$tmp/conv.safetensors"
# Byte-identical to the reference writer for every canonical case.
ncanon=0 nsame=0
for c in "$CONF"/canonical/*.safetensors; do
    case=$(basename "$c")
    ncanon=$((ncanon + 1))
    if "$BIN" convert "$CONF/files/$case" "$tmp/c.safetensors" >/dev/null 2>"$tmp/err" &&
        cmp -s "$c" "$tmp/c.safetensors"; then
        nsame=$((nsame + 1))
    else
        echo "    convert differs from the reference: $case" >&2
    fi
    rm -f "$tmp/c.safetensors"
done
check "convert = reference writer ($nsame/$ncanon canonical cases)" [ "$ncanon" -gt 40 -a "$nsame" -eq "$ncanon" ]
# Inputs are never overwritten: same path, a hard link, a symlink.
cp "$SAMPLE" "$tmp/in.safetensors"
sum=$(cksum <"$tmp/in.safetensors")
expect 2 "convert IN IN" "$BIN" convert "$tmp/in.safetensors" "$tmp/in.safetensors"
check "convert IN IN: says why" grep -q "input" "$tmp/err"
ln "$tmp/in.safetensors" "$tmp/hard.safetensors"
expect 2 "convert IN hard-link-of-IN" "$BIN" convert "$tmp/in.safetensors" "$tmp/hard.safetensors"
ln -s in.safetensors "$tmp/sym.safetensors"
expect 2 "convert IN symlink-to-IN" "$BIN" convert "$tmp/in.safetensors" "$tmp/sym.safetensors"
expect 2 "convert symlink-to-IN IN" "$BIN" convert "$tmp/sym.safetensors" "$tmp/in.safetensors"
check "input unchanged" [ "$(cksum <"$tmp/in.safetensors")" = "$sum" ]
check "symlink kept" [ -L "$tmp/sym.safetensors" ]
# Failures leave nothing behind.
mkdir "$tmp/fail"
expect 1 "convert invalid IN" "$BIN" convert "$bad_file" "$tmp/fail/out.safetensors"
check "convert invalid IN: code on stderr" grep -q ": offsets: " "$tmp/err"
check "convert invalid IN: no output" [ -z "$(ls -A "$tmp/fail")" ]
expect 2 "convert missing IN" "$BIN" convert "$tmp/missing" "$tmp/fail/out.safetensors"
check "convert missing IN: no output" [ -z "$(ls -A "$tmp/fail")" ]
expect 2 "convert into a missing folder" "$BIN" convert "$SAMPLE" "$tmp/nope/out.safetensors"
check "missing folder not created" [ ! -e "$tmp/nope" ]
mkdir "$tmp/fail/out.safetensors"
expect 2 "convert onto a directory" "$BIN" convert "$SAMPLE" "$tmp/fail/out.safetensors"
check "convert onto a directory: no temp left" [ "$(ls -A "$tmp/fail")" = "out.safetensors" ]
check "convert onto a directory: it stays empty" [ -z "$(ls -A "$tmp/fail/out.safetensors")" ]
expect 2 "convert one argument" "$BIN" convert "$SAMPLE"
# A read of IN that fails halfway through the data (an LD_PRELOAD shim
# makes pread fail past a given offset): exit 2, IN named, no OUT, no temp.
if [ "${ST_SAN:-0}" != 1 ] && command -v cc >/dev/null 2>&1; then
    cat >"$tmp/failpread.c" <<'CEOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
/* pread fails with EIO for reads past $FAIL_PREAD_FROM. */
static ssize_t fail_or_call(const char *sym, int fd, void *buf, size_t n, off_t off)
{
    const char *from = getenv("FAIL_PREAD_FROM");
    if (from && off + (off_t)n > (off_t)strtoll(from, NULL, 10)) {
        errno = EIO;
        return -1;
    }
    ssize_t (*real)(int, void *, size_t, off_t) =
        (ssize_t (*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, sym);
    return real(fd, buf, n, off);
}
ssize_t pread(int fd, void *buf, size_t n, off_t off) { return fail_or_call("pread", fd, buf, n, off); }
ssize_t pread64(int fd, void *buf, size_t n, off_t off) { return fail_or_call("pread64", fd, buf, n, off); }
CEOF
    if cc -shared -fPIC -o "$tmp/failpread.so" "$tmp/failpread.c" -ldl 2>"$tmp/cc.log"; then
        mkdir -p "$tmp/rf"
        from=$(( $(stat -c %s "$SAMPLE") - 100 ))
        # the buffered copy path: the kernel's copy_file_range does no pread
        run env LD_PRELOAD="$tmp/failpread.so" FAIL_PREAD_FROM=$from ST_NO_COPY_FILE_RANGE=1 \
            "$BIN" convert "$SAMPLE" "$tmp/rf/out.safetensors"
        check "convert with a failing read exits 2" [ "$rc" -eq 2 ]
        check "failing read: IN named with io" grep -q "sample.safetensors: io: " "$tmp/err"
        check "failing read: nothing left in OUT's folder" [ -z "$(ls -A "$tmp/rf")" ]
        run env LD_PRELOAD="$tmp/failpread.so" FAIL_PREAD_FROM=$from "$BIN" info "$SAMPLE"
        check "info reads no tensor data (works with data reads failing)" [ "$rc" -eq 0 ]
    else
        bad "could not build the pread shim"; cat "$tmp/cc.log" >&2
    fi
fi
# An existing OUT is replaced whole (atomically).
printf 'old contents' >"$tmp/old.safetensors"
expect 0 "convert over an existing OUT" "$BIN" convert "$SAMPLE" "$tmp/old.safetensors"
check "existing OUT replaced" cmp -s "$SAMPLE" "$tmp/old.safetensors"

# ---------------------------------------------------------------- demo
expect 0 "scripts/demo.sh" bash "$ROOT/scripts/demo.sh" "$BIN"
check "demo: every step as expected" grep -q "^Demo done: every command behaved as expected" "$tmp/out"
check "demo: shows the convert" grep -q "^wrote \$TMP/canonical.safetensors: 15 tensors" "$tmp/out"

# ---------------------------------------------------------------- install
# Into a DESTDIR, then the README's example built against the installed
# pkg-config file (the sanitizer build's library needs its runtime: skipped).
if [ "${ST_SAN:-0}" != 1 ] && command -v pkg-config >/dev/null 2>&1; then
    dest=$tmp/dest prefix=/opt/st
    if make -C "$ROOT" -s --no-print-directory BUILD="$BUILD" PREFIX=$prefix DESTDIR="$dest" \
        install >"$tmp/install.log" 2>&1; then ok; else bad "make install"; cat "$tmp/install.log" >&2; fi
    for f in bin/safetensors include/safetensors.h lib/libsafetensors.a lib/libsafetensors.so \
        lib/libsafetensors.so.0 lib/pkgconfig/safetensors.pc share/man/man1/safetensors.1; do
        check "installed $f" [ -e "$dest$prefix/$f" ]
    done
    expect 0 "installed CLI runs" "$dest$prefix/bin/safetensors" check "$SAMPLE"
    "$PY" - "$ROOT/README.md" "$tmp/example.c" <<'PYEOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
blocks = re.findall(r"```c\n(.*?)```", text, re.S)
open(sys.argv[2], "w").write(blocks[0] if blocks else "")
PYEOF
    check "README has a C example" [ -s "$tmp/example.c" ]
    export PKG_CONFIG_PATH=$dest$prefix/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
    if cc -std=c11 -Wall -Wextra -Werror -o "$tmp/example" "$tmp/example.c" \
        $(pkg-config --cflags safetensors) $(pkg-config --libs --static safetensors) 2>"$tmp/cc.log"; then
        ok
        (cd "$tmp" && LD_LIBRARY_PATH=$dest$prefix/lib ./example >"$tmp/ex.out" 2>&1)
        check "README example runs against the installed library" [ $? -eq 0 ]
        check "example used the installed .so" bash -c "LD_LIBRARY_PATH='$dest$prefix/lib' ldd '$tmp/example' | grep -q '$dest$prefix/lib/libsafetensors.so.0'"
    else
        bad "README example compiles with pkg-config"; cat "$tmp/cc.log" >&2
    fi
    if command -v groff >/dev/null 2>&1; then
        check "man page renders without warnings" bash -c "groff -man -Tutf8 -ww -z '$dest$prefix/share/man/man1/safetensors.1' 2>&1 | (! grep .)"
    fi
fi

echo "# passed $pass failed $fail"
[ "$fail" -eq 0 ]
