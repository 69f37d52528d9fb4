"""Key providers: what wraps a vault's keys with a key-encryption key (KEK) the database never sees.

A provider is three things: `kek_id` (the KEK that `wrap` uses now), `wrap(plaintext, aad)` and
`unwrap(kek_id, wrapped, aad)`. The local one reads a 32-byte KEK from a file (CBR_KEK_FILE). An external KMS
plugs in as another class with the same three members (its `wrap` calls the KMS's Encrypt with the key's id as
`kek_id`, `unwrap` its Decrypt; `aad` becomes the KMS's encryption context), chosen in `key_provider()`.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Protocol

from cbr_common.settings import Settings, SettingsError

KEK_SIZE = 32
NONCE_SIZE = 12


class KeyUnwrapError(Exception):
    """A wrapped key does not open with this provider: another KEK wrapped it, or it was altered. A job meeting it
    goes again (another worker may hold the right KEK); its last attempt fails the task with `task_code`."""
    task_code = "BackupService.6763"


class KeyProvider(Protocol):
    kek_id: str

    def wrap(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        """(the id of the KEK used, the wrapped bytes); aad binds the result to its place (vault and role)."""

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes: ...


def kek_fingerprint(kek: bytes) -> str:
    """Names a KEK without revealing it: stored beside each wrapped key, so a wrong KEK is named as such."""
    return "file:" + hashlib.sha256(b"cbr-kek-id\0" + kek).hexdigest()[:16]


class KeyFileProvider:
    """AES-256-GCM under a 32-byte KEK read once from a file that only its owner may read (mode 0600 or 0400)."""

    def __init__(self, kek: bytes):
        if len(kek) != KEK_SIZE:
            raise ValueError(f"a KEK is {KEK_SIZE} bytes, got {len(kek)}")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._aead = AESGCM(kek)
        self.kek_id = kek_fingerprint(kek)

    @classmethod
    def from_file(cls, path: str | Path) -> "KeyFileProvider":
        return cls(read_kek_file(path))

    def wrap(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(NONCE_SIZE)
        return self.kek_id, nonce + self._aead.encrypt(nonce, plaintext, aad)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag
        if kek_id != self.kek_id:
            raise KeyUnwrapError(f"the key was wrapped by KEK {kek_id}, this process has {self.kek_id} "
                                 f"(after a rotation, restart with the new CBR_KEK_FILE)")
        try:
            return self._aead.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)
        except InvalidTag:
            raise KeyUnwrapError(f"a key wrapped by KEK {kek_id} does not authenticate (altered or moved)") from None


def read_kek_file(path: str | Path) -> bytes:
    """The KEK in the file; refuses a file that group or others may read or write, or of the wrong size."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise SettingsError(f"CBR_KEK_FILE {path} is not a regular file")
        if mode & 0o077:
            raise SettingsError(f"CBR_KEK_FILE {path} has mode {stat.S_IMODE(mode):04o}: it must be readable by "
                                f"its owner only (chmod 600 {path})")
        kek = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"CBR_KEK_FILE {path} cannot be read: {exc.strerror}") from None
    if len(kek) != KEK_SIZE:
        raise SettingsError(f"CBR_KEK_FILE {path} must hold exactly {KEK_SIZE} bytes, it holds {len(kek)}")
    return kek


def create_kek_file(path: str | Path) -> Path:
    """A new random KEK in a new file of mode 0600; an existing file is kept as it is (it may guard vaults)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    try:
        os.write(fd, os.urandom(KEK_SIZE))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def key_provider(settings: Settings) -> KeyProvider:
    """The provider the settings name; today the key file. Fails at start with the setting's name."""
    if not settings.kek_file.strip():
        raise SettingsError("missing required setting CBR_KEK_FILE (the file holding the 32-byte key-encryption "
                            "key that wraps every vault's keys)")
    return KeyFileProvider.from_file(settings.kek_file)
