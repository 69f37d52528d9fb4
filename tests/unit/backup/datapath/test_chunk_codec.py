"""Chunk codec: stored forms round-trip, and any damage, wrong key or missing dictionary is a DataLossError."""
import os
import random

import pytest

from cbr_backup.datapath.chunk_codec import (FLAG_DICT, FLAG_ENCRYPTED, FLAG_ZSTD, ChunkCodec, VaultKeys, chunk_id)
from cbr_backup.datapath.errors import ChunkCorruptError
from cbr_common.errors import DataLossError

TEXT = b"".join(b"%08d backup vault disk chunk restore\n" % i for i in range(2000))[:64 << 10]
RANDOM = random.Random(1).randbytes(64 << 10)
DICTIONARY = (0x1234ABCD, TEXT[:32 << 10] + b"some other words the dictionary knows")


def codecs():
    id_key, enc_key = os.urandom(32), os.urandom(32)
    for encrypted in (False, True):
        keys = VaultKeys(id_key, enc_key if encrypted else None)
        yield keys, ChunkCodec(keys)
        yield keys, ChunkCodec(keys, dictionary=DICTIONARY, dictionaries={DICTIONARY[0]: DICTIONARY[1]}.get)


@pytest.mark.parametrize("data", [TEXT, RANDOM, TEXT[:1000], b"x", b""], ids=["text", "random", "short", "1", "0"])
def test_round_trip(data):
    for keys, codec in codecs():
        digest = chunk_id(data, keys.id_key)
        value = codec.encode(data, digest)
        assert codec.decode(value, digest, len(data)) == data


def test_stored_forms():
    keys = VaultKeys(os.urandom(32))
    plain = ChunkCodec(keys)
    assert plain.encode(RANDOM, plain.chunk_id(RANDOM)) == RANDOM             # incompressible: bare
    compressed = plain.encode(TEXT, plain.chunk_id(TEXT))
    assert compressed[0] == FLAG_ZSTD and len(compressed) < len(TEXT) // 2
    with_dict = ChunkCodec(keys, dictionary=DICTIONARY).encode(TEXT, plain.chunk_id(TEXT))
    assert with_dict[0] == FLAG_ZSTD | FLAG_DICT and len(with_dict) < len(compressed)
    sealed = ChunkCodec(VaultKeys(keys.id_key, os.urandom(32)))
    assert sealed.encode(RANDOM, plain.chunk_id(RANDOM))[0] == FLAG_ENCRYPTED
    assert sealed.encode(TEXT, plain.chunk_id(TEXT))[0] == FLAG_ENCRYPTED | FLAG_ZSTD


def test_ids_are_keyed():
    assert chunk_id(TEXT, bytes(32)) != chunk_id(TEXT, bytes(31) + b"\x01")
    assert len(chunk_id(b"", bytes(32))) == 32


@pytest.mark.parametrize("data", [TEXT, RANDOM], ids=["compressed", "raw"])
def test_a_flipped_byte_is_data_loss(data):
    for keys, codec in codecs():
        digest = chunk_id(data, keys.id_key)
        value = codec.encode(data, digest)
        for position in (0, 1, len(value) // 2, len(value) - 1):
            damaged = bytearray(value)
            damaged[position] ^= 0x01
            with pytest.raises(DataLossError):
                codec.decode(bytes(damaged), digest, len(data))


def test_truncated_values_are_data_loss():
    for keys, codec in codecs():
        digest = chunk_id(TEXT, keys.id_key)
        value = codec.encode(TEXT, digest)
        for damaged in (value[:-1], value[:len(value) // 2], b""):
            with pytest.raises(ChunkCorruptError):
                codec.decode(damaged, digest, len(TEXT))


def test_wrong_id_key_fails_verification():
    keys = VaultKeys(os.urandom(32))
    digest = chunk_id(TEXT, keys.id_key)
    value = ChunkCodec(keys).encode(TEXT, digest)
    with pytest.raises(ChunkCorruptError, match="does not match its id"):
        ChunkCodec(VaultKeys(os.urandom(32))).decode(value, digest, len(TEXT))


def test_wrong_encryption_key_fails_authentication():
    id_key = os.urandom(32)
    digest = chunk_id(TEXT, id_key)
    value = ChunkCodec(VaultKeys(id_key, os.urandom(32))).encode(TEXT, digest)
    with pytest.raises(ChunkCorruptError, match="authentication"):
        ChunkCodec(VaultKeys(id_key, os.urandom(32))).decode(value, digest, len(TEXT))
    with pytest.raises(ChunkCorruptError, match="no encryption key"):
        ChunkCodec(VaultKeys(id_key)).decode(value, digest, len(TEXT))


def test_chunk_moved_to_another_id_fails_in_an_encrypted_vault():
    keys = VaultKeys(os.urandom(32), os.urandom(32))
    codec = ChunkCodec(keys)
    value = codec.encode(TEXT, codec.chunk_id(TEXT))
    other = codec.chunk_id(RANDOM)
    with pytest.raises(ChunkCorruptError):  # the id is associated data: a swapped value does not open
        codec.decode(value, other, len(TEXT))


def test_plaintext_in_an_encrypted_vault_is_refused():
    keys = VaultKeys(os.urandom(32), os.urandom(32))
    codec = ChunkCodec(keys)
    with pytest.raises(ChunkCorruptError, match="not encrypted"):
        codec.decode(b"\x00" + RANDOM, codec.chunk_id(RANDOM), len(RANDOM))


def test_missing_dictionary_is_data_loss():
    keys = VaultKeys(os.urandom(32))
    digest = chunk_id(TEXT, keys.id_key)
    value = ChunkCodec(keys, dictionary=DICTIONARY).encode(TEXT, digest)
    with pytest.raises(ChunkCorruptError, match="dictionary"):
        ChunkCodec(keys, dictionaries=lambda tag: None).decode(value, digest, len(TEXT))


def test_seal_round_trip_and_binding():
    for keys, codec in codecs():
        sealed = codec.seal(b"manifest bytes", b"v/manifests/a")
        assert codec.unseal(sealed, b"v/manifests/a") == b"manifest bytes"
        if keys.enc_key is not None:
            with pytest.raises(ChunkCorruptError):
                codec.unseal(sealed, b"v/manifests/b")


def test_keys_are_checked_and_not_printed():
    with pytest.raises(ValueError):
        VaultKeys(b"short")
    with pytest.raises(ValueError):
        VaultKeys(bytes(32), b"short")
    key = os.urandom(32)
    assert key.hex() not in repr(VaultKeys(key, key))


# Between regions (DESIGN.md 17.6): the payload crosses as stored, without the source's envelope, and the
# destination seals it with its own key after checking it against the id, in the source's namespace.

def _vaults(encrypted_source: bool, encrypted_destination: bool, dictionary: bool):
    id_key = os.urandom(32)
    source = ChunkCodec(VaultKeys(id_key, os.urandom(32) if encrypted_source else None),
                        dictionary=DICTIONARY if dictionary else None,
                        dictionaries={DICTIONARY[0]: DICTIONARY[1]}.get)
    destination = ChunkCodec(VaultKeys(id_key, os.urandom(32) if encrypted_destination else None),
                             dictionaries={DICTIONARY[0]: DICTIONARY[1]}.get)
    return source, destination


@pytest.mark.parametrize("encrypted_source", [False, True])
@pytest.mark.parametrize("encrypted_destination", [False, True])
@pytest.mark.parametrize("dictionary", [False, True])
@pytest.mark.parametrize("data", [TEXT, RANDOM, b"", b"x" * 100])
def test_wire_form_round_trip(encrypted_source, encrypted_destination, dictionary, data):
    source, destination = _vaults(encrypted_source, encrypted_destination, dictionary)
    digest = source.chunk_id(data)
    stored = source.encode(data, digest)
    wire = source.to_wire(stored, digest, len(data))
    assert not wire.flags & FLAG_ENCRYPTED
    if data is TEXT:  # compressed at the source, and crosses compressed: never re-compressed or expanded
        assert wire.flags & FLAG_ZSTD and len(wire.payload) < len(data)
        assert bool(wire.flags & FLAG_DICT) == dictionary
    if data is RANDOM:
        assert wire.flags == 0 and wire.payload == data
    value = destination.from_wire(wire, digest, len(data))
    assert destination.decode(value, digest, len(data)) == data
    if encrypted_destination:  # sealed with the destination's key, whatever the source had
        assert value[0] & FLAG_ENCRYPTED
    else:
        assert value == data or not value[0] & FLAG_ENCRYPTED


@pytest.mark.parametrize("data", [TEXT, RANDOM])
def test_a_flipped_wire_byte_is_refused(data):
    source, destination = _vaults(True, True, True)
    digest = source.chunk_id(data)
    wire = source.to_wire(source.encode(data, digest), digest, len(data))
    flipped = bytearray(wire.payload)
    flipped[len(flipped) // 2] ^= 0x40
    with pytest.raises(ChunkCorruptError):
        destination.from_wire(type(wire)(wire.flags, wire.tag, bytes(flipped)), digest, len(data))
    with pytest.raises(ChunkCorruptError):  # a wrong raw size
        destination.from_wire(wire, digest, len(data) - 1)
    with pytest.raises(ChunkCorruptError):  # presented under another id
        destination.from_wire(wire, source.chunk_id(b"other"), len(data))


def test_wire_flags_are_checked():
    source, destination = _vaults(False, False, False)
    digest = source.chunk_id(TEXT)
    wire = source.to_wire(source.encode(TEXT, digest), digest, len(TEXT))
    for flags in (FLAG_ENCRYPTED | FLAG_ZSTD, FLAG_DICT, 0x80):
        with pytest.raises(ChunkCorruptError):
            destination.from_wire(type(wire)(flags, wire.tag, wire.payload), digest, len(TEXT))


def test_an_envelope_altered_at_the_source_is_caught_before_sending():
    source, _ = _vaults(True, True, False)
    digest = source.chunk_id(TEXT)
    stored = bytearray(source.encode(TEXT, digest))
    stored[-1] ^= 1
    with pytest.raises(ChunkCorruptError):
        source.to_wire(bytes(stored), digest, len(TEXT))
