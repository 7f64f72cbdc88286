"""Which variable names look like they hold a secret, so a notebook step does not store them unasked.

A checkpoint is a pickle on disk beside the store, readable by anyone who can read the store; a
password or token bound in a step cell would sit there in clear. Names are split into words
(``_`` and camelCase) and a word is compared whole, so ``tokens`` or ``secretary`` are not taken
for secrets while ``access_token``, ``apiKey`` and ``DB_PASSWORD`` are. An all-upper-case name,
as ``.env`` files spell their keys, also counts when one of its words is ``KEY``
(``AWS_SECRET_ACCESS_KEY``, ``STRIPE_KEY``); a lower-case ``key`` is too common a name to count.
"""

from __future__ import annotations

import itertools
import re

SECRET_WORDS = frozenset(
    {"password", "passwords", "passwd", "token", "secret", "secrets", "credential", "credentials", "apikey"}
)
SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("secret", "key"), ("access", "key")})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _words(name: str) -> list[str]:
    return [w.lower() for part in name.split("_") for w in _WORD.findall(part)]


def looks_secret(name: str) -> bool:
    """Whether a variable named ``name`` probably holds a secret (a password, a token, an API key)."""
    words = _words(name)
    if any(w in SECRET_WORDS for w in words):
        return True
    if any(pair in SECRET_PAIRS for pair in itertools.pairwise(words)):
        return True
    letters = name.replace("_", "")
    return letters.isupper() and "key" in words
