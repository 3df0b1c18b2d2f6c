"""Key secrets: how they are made, how they are stored (a hash), how they are shown (a hint).

Why SHA-256 and not bcrypt/argon2: those are slow on purpose, to make guessing a *low-entropy*
password expensive. A generated key carries 256 random bits; no amount of guessing finds one, slow
hash or fast. A fast, unsalted hash also lets the store find a key by its hash (an index lookup)
instead of trying every stored salt, and costs microseconds where bcrypt costs ~100 ms of CPU per
lookup. Keys a person chooses (the config's ``secret``) must be long (16+ characters) for the same
reason; the demo key is a demo.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from ulid import ULID

PREFIX = "sk-llmrelay-"


def new_secret() -> str:
    """A fresh key secret: the prefix (so secret scanners and people recognise it) + 256 random bits."""
    return PREFIX + secrets.token_urlsafe(32)


def new_id() -> str:
    return f"key_{ULID()}"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two hashes (the store found the row by one; check it anyway)."""
    return hmac.compare_digest(a.encode(), b.encode())


def hint(secret: str) -> str:
    """What a listing shows of a secret: enough to tell keys apart, useless to an attacker."""
    head = PREFIX if secret.startswith(PREFIX) else secret[:3]
    return f"{head}...{secret[-4:]}"
