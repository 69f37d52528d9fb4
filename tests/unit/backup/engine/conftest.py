"""Fixtures of the engine tests."""
from __future__ import annotations

import ctypes

import pytest


@pytest.fixture
def exact_size():
    """Copies bytes into a buffer that ends exactly where its allocation ends.

    bytes and bytearray keep a spare NUL byte after the data, so a one-byte over-read goes unseen;
    under `make asan` (PYTHONMALLOC=malloc) an over-read of this buffer is reported.
    """

    def copy(data: bytes):
        return (ctypes.c_ubyte * len(data)).from_buffer_copy(data)

    return copy
