"""Builds the _safetensors_c extension against the repository's static
library (build/libsafetensors.a, made here with `make lib` when missing or
stale). ST_LIBRARY=/path/libsafetensors.a uses another build instead."""
import os
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _library():
    lib = os.environ.get("ST_LIBRARY")
    if lib:
        if not os.path.isfile(lib):
            raise SystemExit(f"ST_LIBRARY={lib}: no such file")
        return lib
    if not os.path.isfile(os.path.join(ROOT, "Makefile")):
        raise SystemExit("setup.py: build from the safetensors-c source tree (python/ in it), "
                         "or set ST_LIBRARY to a built libsafetensors.a")
    # make decides whether anything is stale; the library is built -fPIC.
    subprocess.check_call(["make", "-C", ROOT, "--no-print-directory", "lib"])
    return os.path.join(ROOT, "build", "libsafetensors.a")


LIB = _library()

setup(
    ext_modules=[
        Extension(
            "safetensors_c._safetensors_c",
            sources=["src/_safetensors_c.c"],
            include_dirs=[os.path.join(ROOT, "include")],
            define_macros=[("_GNU_SOURCE", None)],
            extra_compile_args=["-std=c11", "-fvisibility=hidden"],
            extra_objects=[LIB],
            libraries=["crypto", "z", "pthread", "m"],
        )
    ],
)
