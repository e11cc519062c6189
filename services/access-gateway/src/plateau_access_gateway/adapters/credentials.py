"""Cryptography of credentials: argon2id password hashes, random tokens, TOTP, the policy's
estimator. Everything secret is generated with ``secrets`` and stored only as a hash."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn  # type: ignore[import-untyped]
from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]

from plateau_access_gateway.domain.passwords import PasswordPolicy

ISSUER = "Plateau"
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread

_COMMON = frozenset(FREQUENCY_LISTS["passwords"])


def is_common(password: str) -> bool:
    """Whether the password, or it without trailing digits and symbols, is a common one."""
    lowered = password.casefold()
    return lowered in _COMMON or lowered.rstrip("0123456789!@#$%^&*?.-_ ") in _COMMON


def strength(password: str, user_inputs: Sequence[str]) -> int:
    """zxcvbn's 0-4 score (its estimator only looks at the first 100 characters)."""
    return int(zxcvbn(password[:100], user_inputs=list(user_inputs))["score"])


def default_policy() -> PasswordPolicy:
    return PasswordPolicy(is_common=is_common, strength=strength)


@dataclass(frozen=True)
class Argon2Parameters:
    """argon2id cost; RFC 9106's second recommended option by default (64 MiB, 3 passes)."""

    time_cost: int = 3
    memory_cost_kib: int = 65536
    parallelism: int = 4


class Passwords:
    """Hashes and verifies passwords with argon2id, off the event loop (~150 ms each).

    At most ``max_parallel`` at once: a flood of logins queues here instead of taking
    every core and 64 MiB per attempt (the rate limits and lockout bound the queue).
    """

    def __init__(
        self, parameters: Argon2Parameters | None = None, *, max_parallel: int = 2
    ) -> None:
        self._slots = asyncio.Semaphore(max_parallel)
        p = parameters or Argon2Parameters()
        self._hasher = PasswordHasher(
            time_cost=p.time_cost, memory_cost=p.memory_cost_kib, parallelism=p.parallelism
        )
        # Verified when no account has the name, so an unknown user costs what a known one does.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash (unknown user) verifies a dummy one."""
        async with self._slots:
            matches = await asyncio.to_thread(self._verify, stored_hash or self._dummy, password)
        return matches and stored_hash is not None

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether the hash was made with other parameters than today's."""
        return self._hasher.check_needs_rehash(stored_hash)


def new_secret(prefix: str = "") -> str:
    """A random bearer secret (256 bits), with a prefix that says what it is."""
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    """What is stored of a high-entropy secret (session, token, recovery code)."""
    return hashlib.sha256(secret.encode()).digest()


def new_id() -> str:
    """A random public identifier (of a session or token, never a secret)."""
    return secrets.token_hex(12)


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """One-time recovery codes, 12 characters (about 59 bits) in groups of four."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


def normalise_recovery_code(code: str) -> str:
    raw = "".join(c for c in code.casefold() if c.isalnum())
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


@dataclass(frozen=True)
class TotpEnrolment:
    """What a user needs to add the account to an authenticator app."""

    secret: str
    uri: str
    qr_svg: str


def totp_enrolment(username: str, secret: str | None = None) -> TotpEnrolment:
    seed = secret or pyotp.random_base32()
    uri = pyotp.TOTP(seed).provisioning_uri(name=username, issuer_name=ISSUER)
    svg = segno.make(uri, error="m").svg_inline(scale=4)
    return TotpEnrolment(seed, uri, svg)


def totp_step(secret: str, code: str, now: datetime, window: int = 1) -> int | None:
    """The time step whose code ``code`` is (within ``window`` steps of now), or None."""
    totp = pyotp.TOTP(secret)
    candidate = "".join(c for c in code if c.isdigit())
    if len(candidate) != totp.digits:
        return None
    current = totp.timecode(now)
    for step in range(current - window, current + window + 1):
        if hmac.compare_digest(totp.generate_otp(step), candidate):
            return step
    return None


def totp_code(secret: str, now: datetime) -> str:
    """The code an authenticator app shows at ``now`` (for tests and the demo)."""
    return pyotp.TOTP(secret).at(now)
