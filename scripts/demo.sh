#!/usr/bin/env bash
# `make demo`: the CLI on examples/sample.safetensors, a tiny Stable
# Diffusion LoRA look-alike: check, info, ls, then convert to a temporary
# file and check the result, and check a truncated copy.
#   scripts/demo.sh [path/to/safetensors]
# Exits 1 if any command did not exit as expected.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-build/safetensors}
case "$bin" in /*) ;; *) bin=$root/$bin ;; esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
if [ -t 1 ]; then bold=$(printf '\033[1m') plain=$(printf '\033[0m'); else bold= plain=; fi

# step WANT CMD...: shows the command, runs it, checks its exit code.
step() {
    local want=$1; shift
    local shown="" a
    for a in "$@"; do
        if [[ "$a" =~ ^[A-Za-z0-9_./=-]+$ ]]; then shown+="$a "; else shown+="'$a' "; fi
    done
    shown=${shown//$root\//}
    shown=${shown//$tmp/\$TMP}
    printf '\n%s$ %s%s\n' "$bold" "${shown% }" "$plain"
    local rc
    if [[ "$*" == *"$tmp"* ]]; then
        # Temporary paths show as $TMP in the output too.
        "$@" 2>&1 | sed "s|$tmp|\$TMP|g"
        rc=${PIPESTATUS[0]}
    else
        # Straight to the terminal, so ls fits its width.
        "$@"
        rc=$?
    fi
    if [ "$rc" -ne "$want" ]; then
        echo "!! exit status $rc, expected $want"
        status=1
    elif [ "$rc" -ne 0 ]; then
        echo "(exit status $rc, as expected)"
    fi
}

[ -x "$bin" ] || { echo "demo: $bin is not built (run make)" >&2; exit 2; }
cd "$root"
echo "Demo of $("$bin" --version) on examples/sample.safetensors,"
echo "a tiny Stable Diffusion LoRA (kohya-style names, F16/F32, ss_* metadata)."
step 0 "$bin" check examples/sample.safetensors
step 0 "$bin" info examples/sample.safetensors
step 0 "$bin" ls examples/sample.safetensors
step 0 "$bin" ls --sort size examples/sample.safetensors '*lora_te*'
step 0 "$bin" identify examples/sample.safetensors
step 0 "$bin" hash --civitai examples/sample.safetensors
step 0 "$bin" convert examples/sample.safetensors "$tmp/canonical.safetensors"
step 0 "$bin" check "$tmp/canonical.safetensors"
if cmp -s examples/sample.safetensors "$tmp/canonical.safetensors"; then
    echo "(the sample is already canonical: convert wrote the very same bytes)"
fi
head -c 3000 examples/sample.safetensors >"$tmp/truncated.safetensors"
step 1 "$bin" check "$tmp/truncated.safetensors"
echo
if [ "$status" -eq 0 ]; then
    echo "Demo done: every command behaved as expected."
else
    echo "Demo done, with unexpected exit statuses (see '!!' above)."
fi
exit "$status"
