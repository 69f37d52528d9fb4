"""The engine's Encoder: a piece's stored values in one call, in chunk_codec's layout (ChunkCodec decodes them),
with bad arguments refused before anything is made, and one thread at a time per encoder."""
from __future__ import annotations

import os
import random
import struct
import threading

import pytest

from cbr_backup.datapath.chunk_codec import (FLAG_DICT, FLAG_ENCRYPTED, FLAG_ZSTD, NONCE_SIZE, TAG_SIZE, ChunkCodec,
                                             VaultKeys)
from cbr_backup.engine import Encoder

BS = 64 << 10
TEXT = b"".join(b"%08d backup vault disk chunk restore\n" % i for i in range(4000))[:BS]
RANDOM = random.Random(1).randbytes(BS)
ZEROS = bytes(BS)
DICT_TAG = 0x1234ABCD
# Starts like a zstd dictionary (its magic number): it must still be taken as raw content, as decoders take it.
DICTIONARY = struct.pack("<I", 0xEC30A437) + TEXT[:16 << 10]


def codec(encrypted: bool, dictionary: bool) -> ChunkCodec:
    keys = VaultKeys(os.urandom(32), os.urandom(32) if encrypted else None)
    if not dictionary:
        return ChunkCodec(keys)
    return ChunkCodec(keys, dictionary=(DICT_TAG, DICTIONARY), dictionaries={DICT_TAG: DICTIONARY}.get)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "sealed"])
@pytest.mark.parametrize("dictionary", [False, True], ids=["no-dict", "dict"])
def test_a_piece_of_mixed_blocks_decodes_block_by_block(encrypted, dictionary, exact_size):
    c = codec(encrypted, dictionary)
    tail = TEXT[:1000]  # the disk's last block may be short
    piece = exact_size(TEXT + RANDOM + ZEROS + RANDOM[:BS // 2] + TEXT[BS // 2:] + tail)
    blocks = [0, 1, 2, 3]  # all but the short last one; then that one alone
    plains = [bytes(piece)[j * BS:(j + 1) * BS] for j in blocks] + [tail]
    digests = [c.chunk_id(p) for p in plains]
    values = c.encode_blocks(piece, BS, blocks, digests[:4]) + c.encode_blocks(piece, BS, [4], digests[4:])
    assert [c.decode(bytes(v), d, len(p)) for v, d, p in zip(values, digests, plains)] == plains
    flags = [v[0] for v in values]
    if encrypted:
        assert all(f & FLAG_ENCRYPTED for f in flags)
        assert len(values[1]) == 1 + NONCE_SIZE + BS + TAG_SIZE and flags[1] == FLAG_ENCRYPTED  # random: bare
    else:
        assert bytes(values[1]) == RANDOM  # bare: the plaintext itself
    zstd = FLAG_ZSTD | (FLAG_DICT if dictionary else 0)
    assert [f & ~FLAG_ENCRYPTED for f in flags[:1] + flags[2:3]] == [zstd, zstd]
    assert len(values[0]) < BS // 4 and len(values[2]) < 200
    if dictionary and not encrypted:
        assert struct.unpack_from("<I", values[0], 1)[0] == DICT_TAG  # the tag follows the header


def test_the_dictionary_makes_values_smaller_and_one_value_matches_encode():
    plain, with_dict = codec(False, False), codec(False, True)
    digest = plain.chunk_id(TEXT)
    assert len(with_dict.encode_blocks(TEXT, BS, [0], [digest])[0]) < len(plain.encode(TEXT, digest))
    assert bytes(with_dict.encode_blocks(TEXT, BS, [0], [digest])[0]) == with_dict.encode(TEXT, digest)


def test_sealed_values_take_a_fresh_nonce_each_time():
    c = codec(True, True)
    digest = c.chunk_id(TEXT)
    first, second = (bytes(c.encode_blocks(TEXT, BS, [0], [digest])[0]) for _ in range(2))
    assert first[1:1 + NONCE_SIZE] != second[1:1 + NONCE_SIZE] and first[1 + NONCE_SIZE:] != second[1 + NONCE_SIZE:]
    assert c.decode(first, digest, BS) == c.decode(second, digest, BS) == TEXT


@pytest.mark.parametrize("blocks,digests,match", [
    ([2], [b"d" * 32], "outside"),             # the buffer holds blocks 0 and 1
    ([-1], [b"d" * 32], "outside"),
    ([0], [b"d" * 31], "32 bytes"),
    ([0], ["d" * 32], "32 bytes"),
    ([0, 1], [b"d" * 32], "one digest per block"),
])
def test_bad_blocks_and_digests_are_refused(blocks, digests, match):
    with pytest.raises(ValueError, match=match):
        Encoder(level=1).encode(TEXT + TEXT, BS, blocks, digests)


@pytest.mark.parametrize("kwargs,match", [
    ({"enc_key": b"k" * 16}, "32 bytes"),
    ({"probe_min": 100}, "probe"),
    ({"level": 1, "window_log": 99}, "compression parameters"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Encoder(**{"level": 1, **kwargs})


def test_an_encoder_serves_one_thread_at_a_time():
    encoder = Encoder(level=1, enc_key=os.urandom(32))
    big = TEXT * 256  # long enough that the other thread is still inside encode when this one calls
    done = threading.Event()

    def encode_big():
        try:
            encoder.encode(big, BS, list(range(256)), [b"d" * 32] * 256)
        finally:
            done.set()

    other = threading.Thread(target=encode_big)
    other.start()
    refused = 0
    while not done.is_set():
        try:
            encoder.encode(TEXT, BS, [0], [b"d" * 32])
        except RuntimeError as exc:
            assert "one thread at a time" in str(exc)
            refused += 1
    other.join()
    assert refused > 0
    values, ends = encoder.encode(TEXT, BS, [0], [b"d" * 32])  # free again
    assert len(ends) == 1 and ends[0] == len(values) < BS // 4  # the buffer keeps only what the values take
