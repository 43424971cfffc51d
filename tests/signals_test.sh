#!/usr/bin/env bash
# Interrupted and limited runs through the real CLI: SIGINT, SIGTERM and
# SIGHUP in the middle of a write leave no temporary file and the old
# destination intact, and the exit status says which signal ended the run;
# a file-size limit (ulimit -f) is an ordinary error (exit 2, a message, no
# temporary file), not a SIGXFSZ kill.
set -u
bin=${ST_BIN:?ST_BIN not set}
py=${PYTHON:-/usr/bin/python3}
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"
# On disk (not tmpfs): the output's fsync keeps the write going long enough
# to be interrupted.
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/st_signals.XXXXXX")
trap 'umount "$tmp/small" 2>/dev/null; rm -rf "$tmp"' EXIT

# 1 GiB of F32 zeros (sparse: cheap to make and to read).
"$py" - "$tmp/big.safetensors" <<'PY'
import json, struct, sys
n = 1 << 26
hdr = {"t%d" % i: {"dtype": "F32", "shape": [n], "data_offsets": [i * 4 * n, (i + 1) * 4 * n]}
       for i in range(4)}
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    f.truncate(8 + len(h) + 16 * n)
PY
printf 'old' >"$tmp/old"

temp_files() { find "$tmp" -name '.out.safetensors.*' | wc -l; }

# A background job of a non-interactive shell starts with SIGINT ignored
# (and an ignored signal stays ignored, as nohup wants): start the CLI with
# the default actions, as a terminal would.
run_default() {
    exec "$py" -c 'import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])' "$@"
}

# interrupt SIG COUNT_TEMPS RESET COMMAND...: runs COMMAND in the
# background, sends SIG once its temporary file exists (COUNT_TEMPS > 0),
# and sets rc to its exit status; RESET runs before each attempt (a run
# that finished first is tried again, five times at most). Returns 1 if
# the command never stayed long enough to be interrupted.
interrupt() {
    local sig=$1 count=$2 reset=$3 pid
    shift 3
    for _ in 1 2 3 4 5; do
        "$reset"
        run_default "$@" >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 1 500); do
            [ "$("$count")" -gt 0 ] && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.01
        done
        if [ "$("$count")" -gt 0 ] && kill -"$sig" "$pid" 2>/dev/null; then
            wait "$pid"
            rc=$?
            return 0
        fi
        wait "$pid"
    done
    return 1
}

restore_old() { cp "$tmp/old" "$tmp/out.safetensors"; }
for sig in INT TERM HUP; do
    if ! interrupt "$sig" temp_files restore_old "$bin" convert "$tmp/big.safetensors" \
        "$tmp/out.safetensors" --dtype bf16 -q; then
        echo "FAIL: SIG$sig: the write never stayed long enough to be interrupted"
        fail=$((fail + 1))
        continue
    fi
    want=$((128 + $(kill -l "$sig")))
    check "SIG$sig: exit status $rc, want $want (killed by the signal)" [ "$rc" -eq "$want" ]
    check "SIG$sig: no temporary file left" [ "$(temp_files)" -eq 0 ]
    check "SIG$sig: the old destination intact" cmp -s "$tmp/old" "$tmp/out.safetensors"
done

# install --copy writes through the same atomic output file: interrupted,
# it leaves neither its temporary file nor a half-installed model.
ui="$tmp/ui"
mkdir -p "$ui"
install_temps() { find "$ui" -name '.big.safetensors.*' | wc -l; }
uninstall() { rm -rf "$ui"/models; }
if interrupt INT install_temps uninstall "$bin" install "$tmp/big.safetensors" --ui a1111 \
    --root "$ui" --as checkpoint -q; then
    check "install --copy SIGINT: exit status $rc, want 130" [ "$rc" -eq 130 ]
    check "install --copy SIGINT: no temporary file left" [ "$(install_temps)" -eq 0 ]
    check "install --copy SIGINT: nothing installed" \
        [ ! -e "$ui/models/Stable-diffusion/big.safetensors" ]
else
    echo "FAIL: install --copy: the copy never stayed long enough to be interrupted"
    fail=$((fail + 1))
fi
rm -rf "$ui"/models
err=$( (ulimit -f 2048; exec "$bin" install "$tmp/big.safetensors" --ui a1111 --root "$ui" \
    --as checkpoint -q) 2>&1 >/dev/null)
rc=$?
check "install --copy under ulimit -f: exit $rc, want 2" [ "$rc" -eq 2 ]
check "install --copy under ulimit -f: the message says why ($err)" \
    bash -c "echo \"\$1\" | grep -qi 'too large'" _ "$err"
check "install --copy under ulimit -f: no temporary file" [ "$(install_temps)" -eq 0 ]
check "install --copy under ulimit -f: nothing installed" \
    [ ! -e "$ui/models/Stable-diffusion/big.safetensors" ]

# A file-size limit: the write fails with EFBIG; exit 2, a message, no temp.
cp "$tmp/old" "$tmp/out.safetensors"
err=$( (ulimit -f 2048; exec "$bin" convert "$tmp/big.safetensors" "$tmp/out.safetensors" -q) 2>&1 >/dev/null)
rc=$?
check "ulimit -f: exit $rc, want 2 (not killed by SIGXFSZ)" [ "$rc" -eq 2 ]
check "ulimit -f: the message says why ($err)" bash -c "echo \"\$1\" | grep -qi 'too large'" _ "$err"
check "ulimit -f: no temporary file left" [ "$(temp_files)" -eq 0 ]
check "ulimit -f: the old destination intact" cmp -s "$tmp/old" "$tmp/out.safetensors"

# A full disk, for real: a 4 MiB tmpfs mounted here (root only).
mnt="$tmp/small"
mkdir -p "$mnt"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=4m tmpfs "$mnt" 2>/dev/null; then
    printf 'old' >"$mnt/out.safetensors"
    "$py" - "$tmp/mid.safetensors" <<'PY'
import json, struct, sys
n = 3 << 20  # 12 MiB of F32
h = json.dumps({"t": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}},
               separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    f.truncate(8 + len(h) + 4 * n)
PY
    # full_disk WHAT COMMAND...: COMMAND writes $mnt/out.safetensors, which
    # holds "old" and must keep it
    full_disk() {
        local what=$1 err rc
        shift
        err=$("$@" 2>&1 >/dev/null)
        rc=$?
        check "$what, disk full: exit $rc, want 2" [ "$rc" -eq 2 ]
        check "$what, disk full: the message names the folder and the cause ($err)" \
            bash -c "echo \"\$1\" | grep -q '$mnt' && echo \"\$1\" | grep -qi 'no space'" _ "$err"
        check "$what, disk full: no temporary file left" [ "$(find "$mnt" -name '.out*' | wc -l)" -eq 0 ]
        check "$what, disk full: the old destination intact" [ "$(cat "$mnt/out.safetensors")" = old ]
    }
    full_disk convert "$bin" convert "$tmp/mid.safetensors" "$mnt/out.safetensors" -q
    # lora bake: its workers start before the space is reserved; they stop
    # and the file goes when the reservation fails
    "$py" - "$tmp/bake_model.safetensors" "$tmp/bake_lora.safetensors" <<'PY'
import json, struct, sys
def save(path, tensors):
    hdr, blobs, off = {}, [], 0
    for k, (dt, shape, data) in tensors.items():
        hdr[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
k = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
save(sys.argv[1], {k: ("F32", [1280, 1024], struct.pack("<f", 0.5) * (1280 * 1024))})
m = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
one = struct.pack("<e", 1.0)
save(sys.argv[2], {m + ".lora_down.weight": ("F16", [4, 1024], one * 4096),
                   m + ".lora_up.weight": ("F16", [1280, 4], one * 5120),
                   m + ".alpha": ("F16", [], one)})
PY
    full_disk "lora bake" "$bin" lora bake "$tmp/bake_model.safetensors" \
        "$tmp/bake_lora.safetensors" -o "$mnt/out.safetensors" -q
    umount "$mnt"
else
    echo "disk-full check skipped: needs root and a tmpfs mount"
fi

finish
