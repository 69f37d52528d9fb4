"""Builds the backup service's C chunk engine: `python setup.py build_ext --inplace` (see `make engine`)."""
from setuptools import Extension, setup

setup(
    name="cbr-backup",
    packages=["cbr_backup"],
    ext_modules=[
        Extension(
            "cbr_backup.engine._chunker",
            sources=["cbr_backup/engine/_chunker.c", "cbr_backup/engine/kernel.c"],
            depends=["cbr_backup/engine/kernel.h"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Werror"],
        ),
        # Debian's libzstd-dev and libssl-dev (`make engine-packages`).
        Extension(
            "cbr_backup.engine._codec",
            sources=["cbr_backup/engine/_codec.c"],
            libraries=["zstd", "crypto"],
            extra_compile_args=["-O3", "-std=gnu99", "-Wall", "-Wextra", "-Werror"],
        ),
    ],
)
