"""The API token as both sides read it: the trainer that checks it and the client that sends it.

Tokens usually come from a Kubernetes Secret or a file (``kubectl create secret
--from-file``, ``echo token > file``), which leave a trailing newline. Both sides strip
surrounding whitespace by this one rule, so such a token works; a token with whitespace or
control characters inside cannot be sent in an ``Authorization`` header and is refused at
start, with a message that says so, instead of turning every POST into a 401.
"""

from __future__ import annotations


class InvalidToken(ValueError):
    """A token that cannot be sent as ``Authorization: Bearer <token>``."""


def clean_token(raw: str | None) -> str | None:
    """``raw`` without surrounding whitespace; None when nothing is left (no token)."""
    if raw is None:
        return None
    token = raw.strip()
    if not token:
        return None
    if not all(" " < char < "\x7f" for char in token):
        raise InvalidToken(
            "the API token has whitespace, control or non-ASCII characters inside it; "
            "a bearer token is one word of visible ASCII"
        )
    return token
