"""Session tokens: 256 random bits handed out once, only their SHA-256 kept."""

import hashlib
import secrets

TOKEN_BYTES = 32
PREFIX_CHARS = 8


def token_new() -> str:
    """A fresh URL-safe token (256 bits of randomness)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The stored form of a token. Unsalted SHA-256 suffices: tokens are random, not chosen."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_prefix(token: str) -> str:
    """The first characters, shown to operators to tell sessions apart."""
    return token[:PREFIX_CHARS]
