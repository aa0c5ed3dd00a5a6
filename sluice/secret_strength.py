"""How much randomness a secret holds: placeholders and made-up strings are refused at start.

Length says little: ``replace-with-32-or-more-random-bytes`` is 36 bytes and holds almost no
randomness. :func:`estimated_bits` counts roughly what a guesser would have to find, character
by character. A character costs the bits of the smallest alphabet the secret is written in
(hex, base64, printable ASCII), except that it costs nothing when it continues a run (``aaa``,
``abc``, ``123``) or a substring seen earlier (``changeme-changeme``), one bit when it is a
separator used before, and about what a letter of English text does (1.5 bits) when it is in a
run of three or more letters of a secret whose letters are all of one case (``password``,
``replace-with``; hex is exempt, random hex is written so). Random secrets
(``openssl rand -base64 32``, ``openssl rand -hex 32``, ``secrets.token_urlsafe(32)``) estimate at
over 200 bits, placeholders at under 110. Made-up strings in mixed case can pass: this catches
placeholders and patterns, it does not prove randomness.
"""

from __future__ import annotations

import math
import string

from pydantic import SecretStr

MIN_BITS = 128
HOW_TO_MAKE_ONE = (
    "use 32 random bytes, e.g. `openssl rand -base64 32` or "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)

_HEX = frozenset(string.hexdigits)
_BASE64 = frozenset(string.ascii_letters + string.digits + "+/-_=")
_PRINTABLE_BITS = math.log2(95)
_WORD_BITS = 1.5
_SEPARATOR_BITS = 1.0
_MIN_WORD = 3  # letters in a row that read as (part of) a word
_MIN_MATCH = 3  # an earlier substring this long, repeated, is predictable


def _word_letters(secret: str) -> set[int]:
    """Positions of letters in runs of at least ``_MIN_WORD`` letters, when every letter of the
    secret has one case and it is not hex."""
    letters = [c for c in secret if c.isalpha()]
    if set(secret) <= _HEX or not (all(c.islower() for c in letters) or all(c.isupper() for c in letters)):
        return set()
    positions: set[int] = set()
    start = 0
    for i in range(len(secret) + 1):
        if i < len(secret) and secret[i].isalpha():
            continue
        if i - start >= _MIN_WORD:
            positions.update(range(start, i))
        start = i + 1
    return positions


def _repeated(secret: str) -> set[int]:
    """Positions continuing a substring of at least ``_MIN_MATCH`` characters seen earlier
    (its first character excepted), as a compressor would find them."""
    positions: set[int] = set()
    i = 1
    while i < len(secret):
        longest = 0
        for j in range(i):
            n = 0
            while i + n < len(secret) and secret[j + n] == secret[i + n]:
                n += 1
            longest = max(longest, n)
        if longest >= _MIN_MATCH:
            positions.update(range(i + 1, i + longest))
            i += longest
        else:
            i += 1
    return positions


def estimated_bits(secret: str) -> float:
    """About how many bits of randomness ``secret`` holds (see the module's description)."""
    chars = set(secret)
    alphabet_bits = 4.0 if chars <= _HEX else 6.0 if chars <= _BASE64 else _PRINTABLE_BITS
    words, repeated = _word_letters(secret), _repeated(secret)
    seen: set[str] = set()
    total = 0.0
    for i, char in enumerate(secret):
        step = ord(char) - ord(secret[i - 1]) if i else 2
        if i in repeated or (i >= 2 and abs(step) <= 1 and step == ord(secret[i - 1]) - ord(secret[i - 2])):
            pass
        elif not char.isalnum() and char in seen:
            total += _SEPARATOR_BITS
        else:
            total += _WORD_BITS if i in words else alphabet_bits
        seen.add(char)
    return total


def weakness(secret: str) -> str | None:
    """Why ``secret`` is too weak to be a key, or None when it looks random enough."""
    bits = estimated_bits(secret)
    if bits >= MIN_BITS:
        return None
    return (
        f"looks like a placeholder or a made-up string (about {bits:.0f} bits of randomness, "
        f"at least {MIN_BITS} are needed)"
    )


def check_secret(secret: SecretStr | str, where: str) -> None:
    """``ValueError`` naming ``where`` when the secret is weak, saying how to make a good one."""
    problem = weakness(secret.get_secret_value() if isinstance(secret, SecretStr) else secret)
    if problem is not None:
        raise ValueError(f"{where} {problem}: {HOW_TO_MAKE_ONE}")
