"""The KEK in an escrow file, sealed with a passphrase (scrypt, then AES-256-GCM), and opened again.

Format: magic "CBRKEK-ESCROW-1\\n" | salt (16) | nonce (12) | AES-256-GCM(scrypt(passphrase, salt), nonce, KEK,
aad = magic). scrypt with n = 2^15, r = 8, p = 1 (about 0.1 s and 32 MiB per try).
"""
from __future__ import annotations

import hashlib
import os

from cbr_backup.keys.provider import KEK_SIZE, NONCE_SIZE

MAGIC = b"CBRKEK-ESCROW-1\n"
SALT_SIZE = 16


class EscrowError(ValueError):
    """The escrow file is not one, or the passphrase does not open it."""


def _key(passphrase: str, salt: bytes) -> bytes:
    return hashlib.scrypt(passphrase.encode(), salt=salt, n=2 ** 15, r=8, p=1, maxmem=64 * 2 ** 20, dklen=32)


def seal_kek(kek: bytes, passphrase: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    if len(passphrase) < 12:
        raise EscrowError("the escrow passphrase must have at least 12 characters")
    salt, nonce = os.urandom(SALT_SIZE), os.urandom(NONCE_SIZE)
    return MAGIC + salt + nonce + AESGCM(_key(passphrase, salt)).encrypt(nonce, kek, MAGIC)


def open_kek(sealed: bytes, passphrase: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    head = len(MAGIC) + SALT_SIZE + NONCE_SIZE
    if not sealed.startswith(MAGIC) or len(sealed) != head + KEK_SIZE + 16:
        raise EscrowError("not a CBR KEK escrow file")
    salt, nonce = sealed[len(MAGIC):len(MAGIC) + SALT_SIZE], sealed[len(MAGIC) + SALT_SIZE:head]
    try:
        return AESGCM(_key(passphrase, salt)).decrypt(nonce, sealed[head:], MAGIC)
    except InvalidTag:
        raise EscrowError("the passphrase does not open this escrow file") from None
