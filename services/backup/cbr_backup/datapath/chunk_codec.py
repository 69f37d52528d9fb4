"""Chunk ids (keyed BLAKE3) and the stored form of a chunk: bare, zstd (optionally with the vault's
dictionary), optionally sealed with AES-256-GCM. The byte layout is specified in services/backup/DESIGN.md.

Stored value of a chunk whose plaintext is P (len(P) = raw size, known to every reader from the manifest):

    unencrypted vault:  P                                  (bare: incompressible data, no header)
                        hdr | [dict tag u32le] | zstd(P)   (always shorter than P, so never ambiguous)
    encrypted vault:    hdr | nonce(12) | AES-256-GCM(enc_key, nonce, [dict tag] | payload, aad = hdr | chunk id)

hdr is one byte of flags: 0x01 zstd, 0x02 encrypted, 0x04 dictionary. A bare value costs nothing for
incompressible data: a one-byte header would push a 128 KiB block into a 33rd file-system block (+3%).
"""
from __future__ import annotations

import hmac
import os
import struct
import threading
from dataclasses import dataclass
from typing import Callable

import blake3
import zstandard

from cbr_backup.datapath.errors import ChunkCorruptError
from cbr_backup.engine import Encoder, unfilled_bytearray

ID_SIZE = 32
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

FLAG_ZSTD = 0x01
FLAG_ENCRYPTED = 0x02
FLAG_DICT = 0x04
_KNOWN_FLAGS = FLAG_ZSTD | FLAG_ENCRYPTED | FLAG_DICT
_DICT_TAG = struct.Struct("<I")

# zstd level 3 (double-fast strategy) with a 4 MiB window, a 2^16 hash table and 5-byte minimum matches, the
# vault dictionary attached (not copied) to each frame. At 1 MiB blocks this stores 2.8% less than level 1 on
# the usr workload (binaries: the level that tips it under restic's stored bytes) for 12-16% of the compression
# speed; on the standard workload's synthetic text it stores 3% more (DESIGN.md 9.2).
ZSTD_LEVEL = 3
ZSTD_LEVEL_NO_DICT = 3
_PROBE_SIZE = 4096
_PROBE_MIN_SIZE = 4 * _PROBE_SIZE
_PROBE_RATIO = 0.97
_DICT_WINDOW_LOG = 22
_DICT_HASH_LOG = 16
_DICT_MIN_MATCH = 5


def chunk_id(data, id_key: bytes) -> bytes:
    """The chunk's 32-byte id: BLAKE3 keyed with the vault's id key, so ids reveal nothing across vaults."""
    return blake3.blake3(data, key=id_key).digest()


@dataclass(frozen=True)
class VaultKeys:
    """A vault's secrets: id_key names chunks; enc_key, when set, encrypts every stored value."""
    id_key: bytes
    enc_key: bytes | None = None

    def __post_init__(self):
        if not isinstance(self.id_key, bytes) or len(self.id_key) != KEY_SIZE:
            raise ValueError(f"the vault id key must be {KEY_SIZE} bytes")
        if self.enc_key is not None and (not isinstance(self.enc_key, bytes) or len(self.enc_key) != KEY_SIZE):
            raise ValueError(f"the vault encryption key must be {KEY_SIZE} bytes")

    def __repr__(self) -> str:  # never print secrets
        return f"VaultKeys(encrypted={self.enc_key is not None})"


@dataclass(frozen=True)
class WireForm:
    """A chunk as it crosses between regions (DESIGN.md 17.6): the stored payload without any encryption
    envelope. flags: FLAG_ZSTD and FLAG_DICT as stored, never FLAG_ENCRYPTED; 0 means payload is the plaintext."""
    flags: int
    tag: int        # the dictionary tag with FLAG_DICT, else 0
    payload: bytes  # the zstd frame, or the plaintext


def _whole(view: memoryview) -> bytes:
    """The bytes a view shows, without a copy when it shows a whole bytes object (a decrypted payload)."""
    base = view.obj
    if isinstance(base, bytes) and view.nbytes == len(base):
        return base
    return bytes(view)


def dictionary_tag(dict_id: bytes) -> int:
    """The 32-bit number a compressed chunk carries to name its dictionary (first 4 bytes of its id)."""
    return _DICT_TAG.unpack_from(dict_id)[0]


class ChunkCodec:
    """Encodes and decodes stored values for one vault. Thread-safe: zstd contexts are per thread.

    dictionary: (tag, content) of the vault dictionary new chunks are compressed with, or None.
    dictionaries: looks up a dictionary's content by tag for decoding (None: decoding needs no dictionary).
    """

    def __init__(self, keys: VaultKeys, dictionary: tuple[int, bytes] | None = None,
                 dictionaries: Callable[[int], bytes] | None = None, level: int | None = None):
        self.keys = keys
        self._aead = None
        if keys.enc_key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only encrypted vaults pay the import
            self._aead = AESGCM(keys.enc_key)
        self._local = threading.local()
        # Values are made by the engine's Encoder (one per thread: a zstd context serves one call at a time),
        # for a whole piece's blocks per call without the GIL (DESIGN.md 10.4).
        self._encoder_args: dict = {"enc_key": keys.enc_key, "probe_size": _PROBE_SIZE,
                                    "probe_min": _PROBE_MIN_SIZE, "probe_limit": int(_PROBE_SIZE * _PROBE_RATIO)}
        if dictionary is not None:
            tag, content = dictionary
            self._encoder_args.update(level=ZSTD_LEVEL if level is None else level, dictionary=content,
                                      dict_tag=tag, window_log=_DICT_WINDOW_LOG, hash_log=_DICT_HASH_LOG,
                                      min_match=_DICT_MIN_MATCH)
        else:
            self._encoder_args.update(level=ZSTD_LEVEL_NO_DICT if level is None else level)
        self._lookup = dictionaries
        self._ddicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self._ddict_lock = threading.Lock()

    # Ids

    def chunk_id(self, data) -> bytes:
        return blake3.blake3(data, key=self.keys.id_key).digest()

    # Chunks

    def encode(self, data, digest: bytes) -> bytearray:
        """The stored value of data (whose id is digest): compressed where that makes it smaller, sealed in an
        encrypted vault. Blocks that are random or already compressed are found by two 4 KiB probes and left
        bare (saves ~0.5 s of CPU per GiB of them)."""
        return self._encoder().encode(data, max(len(data), 1), [0], [digest])[0]

    def encode_blocks(self, buf, block_size: int, blocks: list[int], digests: list[bytes]) -> list[memoryview]:
        """The stored values of the given blocks of buf (block numbers; the last block may be short), in one
        call that runs without the GIL: views into one buffer, valid as long as they are referenced."""
        values, ends = self._encoder().encode(buf, block_size, blocks, digests)
        whole, start, out = memoryview(values), 0, []
        for end in ends:
            out.append(whole[start:end])
            start = end
        return out

    def _encoder(self) -> Encoder:
        encoder = getattr(self._local, "encoder", None)
        if encoder is None:
            encoder = self._local.encoder = Encoder(**self._encoder_args)
        return encoder

    def _encrypt(self, flags: int, payload, digest: bytes) -> bytearray:
        header = bytes((flags,))
        nonce = os.urandom(NONCE_SIZE)
        # Sealed in place into the one buffer it is stored from: encrypt() and then joining header, nonce and
        # ciphertext made two fresh 128 KiB buffers per chunk and ran at ~1.2 GB/s against ~5 GB/s like this.
        value = unfilled_bytearray(1 + NONCE_SIZE + len(payload) + TAG_SIZE)  # all of it written below
        value[0] = flags
        value[1:1 + NONCE_SIZE] = nonce
        self._aead.encrypt_into(nonce, payload, header + digest, memoryview(value)[1 + NONCE_SIZE:])
        return value

    def decode(self, value: bytes, digest: bytes, raw_size: int, key: str = "") -> bytes:
        """The plaintext of a stored value, checked against its id; ChunkCorruptError on any mismatch."""
        key = key or digest.hex()
        if self._aead is None and len(value) == raw_size:
            plain = value
        else:
            if not value:
                raise ChunkCorruptError(key, "empty value")
            flags = value[0]
            if flags & ~_KNOWN_FLAGS:
                raise ChunkCorruptError(key, f"unknown header {flags:#04x}")
            body = memoryview(value)[1:]
            if self._aead is not None:
                if not flags & FLAG_ENCRYPTED:
                    raise ChunkCorruptError(key, "not encrypted in an encrypted vault")
                body = self._decrypt(value, digest, key)
            elif flags & FLAG_ENCRYPTED:
                raise ChunkCorruptError(key, "encrypted, but the vault has no encryption key")
            plain = self._payload(flags, body, raw_size, key)
        if len(plain) != raw_size:
            raise ChunkCorruptError(key, f"{len(plain)} bytes where {raw_size} were expected")
        if not hmac.compare_digest(self.chunk_id(plain), digest):
            raise ChunkCorruptError(key, "content does not match its id")
        return plain

    def _decrypt(self, value: bytes, aad_id: bytes, key: str) -> memoryview:
        from cryptography.exceptions import InvalidTag
        if len(value) < 1 + NONCE_SIZE + TAG_SIZE:
            raise ChunkCorruptError(key, "too short for its encryption envelope")
        nonce = value[1:1 + NONCE_SIZE]
        try:
            return memoryview(self._aead.decrypt(nonce, memoryview(value)[1 + NONCE_SIZE:], bytes(value[:1]) + aad_id))
        except InvalidTag:
            raise ChunkCorruptError(key, "authentication failed (wrong key or altered bytes)") from None

    def _payload(self, flags: int, body: memoryview, raw_size: int, key: str) -> bytes:
        ddict = None
        if flags & FLAG_DICT:
            if not flags & FLAG_ZSTD or len(body) < _DICT_TAG.size:
                raise ChunkCorruptError(key, "dictionary flag without a compressed payload")
            ddict = self._dictionary(_DICT_TAG.unpack_from(body)[0], key)
            body = body[_DICT_TAG.size:]
        if not flags & FLAG_ZSTD:
            return _whole(body)  # a decrypted payload is returned as is, not copied
        decompressors = getattr(self._local, "decompressors", None)
        if decompressors is None:
            decompressors = self._local.decompressors = {}
        tag = id(ddict)
        decompressor = decompressors.get(tag)
        if decompressor is None:
            decompressor = decompressors[tag] = zstandard.ZstdDecompressor(dict_data=ddict)
        try:  # bounded by raw_size, so a hostile frame cannot balloon; the id check below catches the rest
            return decompressor.decompress(body, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise ChunkCorruptError(key, f"zstd: {exc}") from None

    def _dictionary(self, tag: int, key: str) -> zstandard.ZstdCompressionDict:
        ddict = self._ddicts.get(tag)
        if ddict is not None:
            return ddict
        with self._ddict_lock:
            ddict = self._ddicts.get(tag)
            if ddict is None:
                content = self._lookup(tag) if self._lookup is not None else None
                if content is None:
                    raise ChunkCorruptError(key, f"its compression dictionary {tag:08x} is missing")
                ddict = zstandard.ZstdCompressionDict(content, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
                self._ddicts[tag] = ddict
        return ddict

    # Chunks between regions: the stored payload travels as is, never recompressed (DESIGN.md 17.6)

    def to_wire(self, value: bytes, digest: bytes, raw_size: int, key: str = "") -> WireForm:
        """The stored value without its envelope; the GCM tag is checked, the payload is not decompressed."""
        key = key or digest.hex()
        if self._aead is None and len(value) == raw_size:
            return WireForm(0, 0, bytes(value))
        if not value:
            raise ChunkCorruptError(key, "empty value")
        flags = value[0]
        if flags & ~_KNOWN_FLAGS:
            raise ChunkCorruptError(key, f"unknown header {flags:#04x}")
        if self._aead is not None:
            if not flags & FLAG_ENCRYPTED:
                raise ChunkCorruptError(key, "not encrypted in an encrypted vault")
            body = self._decrypt(value, digest, key)
        elif flags & FLAG_ENCRYPTED:
            raise ChunkCorruptError(key, "encrypted, but the vault has no encryption key")
        else:
            body = memoryview(value)[1:]
        flags &= ~FLAG_ENCRYPTED
        if not flags & FLAG_ZSTD:
            return WireForm(0, 0, _whole(body))
        tag = 0
        if flags & FLAG_DICT:
            if len(body) < _DICT_TAG.size:
                raise ChunkCorruptError(key, "dictionary flag without a compressed payload")
            tag = _DICT_TAG.unpack_from(body)[0]
            body = body[_DICT_TAG.size:]
        return WireForm(flags, tag, _whole(body))

    def from_wire(self, wire: WireForm, digest: bytes, raw_size: int) -> bytes:
        """The stored value, for this codec's vault, of a chunk received from another region. The payload is
        decoded and checked against digest first (ChunkCorruptError otherwise): nothing unchecked is stored."""
        key = digest.hex()
        if wire.flags & ~(FLAG_ZSTD | FLAG_DICT) or (wire.flags & FLAG_DICT and not wire.flags & FLAG_ZSTD):
            raise ChunkCorruptError(key, f"invalid wire flags {wire.flags:#04x}")
        body = memoryview(wire.payload)
        if wire.flags & FLAG_DICT:
            body = memoryview(_DICT_TAG.pack(wire.tag) + wire.payload)
        plain = self._payload(wire.flags, body, raw_size, key) if wire.flags else bytes(wire.payload)
        if len(plain) != raw_size:
            raise ChunkCorruptError(key, f"{len(plain)} bytes where {raw_size} were expected")
        if not hmac.compare_digest(self.chunk_id(plain), digest):
            raise ChunkCorruptError(key, "content does not match its id")
        if not wire.flags:
            return self._encrypt(FLAG_ENCRYPTED, plain, digest) if self._aead is not None else plain
        if self._aead is not None:
            return self._encrypt(FLAG_ENCRYPTED | wire.flags, body, digest)
        stored = bytes((wire.flags,)) + bytes(body)
        # An unencrypted value as long as its plaintext reads as bare (section 2): store the plaintext then.
        return stored if len(stored) < raw_size else plain

    # Other values (manifests): not content-addressed, so bound to their store key instead of an id

    def seal(self, data: bytes, context: bytes) -> bytes:
        """hdr | data, or hdr | nonce | AES-GCM(data, aad = hdr | context) in an encrypted vault."""
        if self._aead is None:
            return b"\x00" + data
        return self._encrypt(FLAG_ENCRYPTED, data, context)

    def unseal(self, value: bytes, context: bytes, key: str = "") -> bytes:
        key = key or context.decode(errors="replace")
        if not value:
            raise ChunkCorruptError(key, "empty value")
        if self._aead is None:
            if value[0] != 0:
                raise ChunkCorruptError(key, f"unexpected header {value[0]:#04x}")
            return value[1:]
        if value[0] != FLAG_ENCRYPTED:
            raise ChunkCorruptError(key, "not encrypted in an encrypted vault")
        return bytes(self._decrypt(value, context, key))
