"""Bearer credentials (session tokens, sensor keys): random, shown once, stored hashed."""

import hashlib
import hmac
import secrets

CREDENTIAL_BYTES = 32
PREFIX_CHARS = 8


def credential_new() -> str:
    """A fresh URL-safe credential (256 bits of randomness)."""
    return secrets.token_urlsafe(CREDENTIAL_BYTES)


def credential_hash(credential: str) -> str:
    """The stored form. Unsalted SHA-256 suffices: credentials are random, not chosen."""
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()


def credential_prefix(credential: str) -> str:
    """The first characters, shown to operators to tell credentials apart."""
    return credential[:PREFIX_CHARS]


def credential_matches(credential: str, stored_hash: str) -> bool:
    """Whether a presented credential hashes to the stored hash (constant time)."""
    return hmac.compare_digest(credential_hash(credential), stored_hash)
