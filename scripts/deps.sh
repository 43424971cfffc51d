#!/usr/bin/env bash
# Installs the Debian packages the project builds and tests with, when missing.
#   scripts/deps.sh            install (needs root), or say what is missing
#   scripts/deps.sh --if-root  install only when run as root; otherwise just report
set -u
pkgs="make gcc clang libclang-rt-14-dev pkg-config libssl-dev zlib1g-dev
      python3 python3-dev python3-numpy python3-torch python3-pytest python3-fsspec
      python3-setuptools valgrind b3sum time liblapacke-dev libopenblas-dev xfsprogs"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
    [ "${1:-}" = "--if-root" ] && exit 0
    exit 1
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
