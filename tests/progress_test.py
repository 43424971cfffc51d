"""The progress line of long commands (programs/cli_progress.c), through the
real binary: drawn on a terminal (a pty here) and cleared at the end, absent
when stderr is not a terminal (scripts, --json), absent with --quiet, and
forced into a pipe with --progress."""
import os
import pty
import select
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import check, finish  # noqa: E402

BIN = os.environ["ST_BIN"]



def save(path, n):
    import json
    import struct
    hdr = {"t": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.write(np.arange(n, dtype=np.float32).tobytes())


def run_tty(args):
    """Runs BIN with stderr on a pty; returns (exit code, stderr bytes)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([BIN] + args, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    p.wait()
    os.close(master)
    return p.returncode, out


with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "in.safetensors")
    save(src, 16 << 20)  # 64 MiB: several progress reports
    ckpt = os.path.join(tmp, "in.ckpt")
    import torch
    torch.save({"t": torch.arange(16 << 20, dtype=torch.float32)}, ckpt)

    shards = os.path.join(tmp, "shards")
    subprocess.run([BIN, "split", src, shards, "--max-shard-size", "20MB", "-q"], check=True)

    def fresh_root():  # install never overwrites: a new destination per run
        return tempfile.mkdtemp(dir=tmp)

    for cmd, make_args in (
            ("convert", lambda: ["convert", src, os.path.join(tmp, "o.safetensors"),
                                 "--dtype", "f16"]),
            ("hash", lambda: ["hash", src]),
            ("join", lambda: ["join", shards, os.path.join(tmp, "j.safetensors")]),
            ("split", lambda: ["split", src, fresh_root(), "--max-shard-size", "20MB"]),
            ("convert", lambda: ["convert", ckpt, os.path.join(tmp, "c.safetensors")]),
            ("diff", lambda: ["diff", src, src]),
            ("merge", lambda: ["merge", src, src, "-o", os.path.join(tmp, "m.safetensors"),
                               "--alpha", "0.5"]),
            ("install", lambda: ["install", src, "--ui", "comfyui", "--as", "checkpoint",
                                 "--root", fresh_root()])):
        rc, err = run_tty(make_args())
        check(rc == 0, "%s on a tty: exit %d" % (cmd, rc))
        check(cmd.encode() in err and b"%" in err, "%s: a progress line on a tty" % cmd)
        check(err.endswith(b"\r\x1b[K"), "%s: the line is cleared at the end" % cmd)
        rc, err = run_tty(make_args() + ["--quiet"])
        check(rc == 0 and err == b"", "%s --quiet: nothing on stderr (%r)" % (cmd, err[:80]))
        p = subprocess.run([BIN] + make_args(), capture_output=True)
        check(p.returncode == 0 and p.stderr == b"", "%s into a pipe: nothing on stderr" % cmd)
        p = subprocess.run([BIN] + make_args() + ["--progress"], capture_output=True)
        check(p.returncode == 0 and cmd.encode() in p.stderr, "%s --progress into a pipe" % cmd)

sys.exit(finish())
