"""The password policy: which passwords a user may choose, and why one is refused.

Pure rules; the strength estimator and the list of common passwords are injected (the
gateway uses zxcvbn's), so the rules are tested without them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PasswordPolicy", "PasswordRule", "WeakPasswordError"]

#: Strength of a password on zxcvbn's 0-4 scale, given words the password must not lean on.
StrengthEstimator = Callable[[str, Sequence[str]], int]


class PasswordRule(StrEnum):
    """A rule a new password must satisfy (named in every refusal)."""

    MIN_LENGTH = "min_length"
    CHARACTER_CLASSES = "character_classes"
    NOT_COMMON = "not_common"
    NOT_USERNAME = "not_username"
    STRENGTH = "strength"


class WeakPasswordError(ValueError):
    """A password was refused; ``failures`` names each rule it broke and why."""

    def __init__(self, failures: Sequence[tuple[PasswordRule, str]]) -> None:
        self.failures = tuple(failures)
        super().__init__("; ".join(message for _, message in self.failures))

    @property
    def rules(self) -> tuple[PasswordRule, ...]:
        return tuple(rule for rule, _ in self.failures)


def _classes(password: str) -> int:
    kinds = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    )
    return sum(kinds)


@dataclass(frozen=True)
class PasswordPolicy:
    """At least ``min_length`` characters of ``min_classes`` kinds (lower, upper, digit,
    other), not a common password, not containing the username, and estimated strong."""

    is_common: Callable[[str], bool]
    strength: StrengthEstimator
    min_length: int = 12
    min_classes: int = 3
    min_strength: int = 3

    def check(self, password: str, username: str) -> None:
        """Return when ``password`` is acceptable for ``username``; ``WeakPasswordError``
        naming every broken rule otherwise."""
        failures: list[tuple[PasswordRule, str]] = []
        if len(password) < self.min_length:
            failures.append(
                (
                    PasswordRule.MIN_LENGTH,
                    f"use at least {self.min_length} characters (this one has {len(password)})",
                )
            )
        if _classes(password) < self.min_classes:
            failures.append(
                (
                    PasswordRule.CHARACTER_CLASSES,
                    f"mix at least {self.min_classes} kinds of characters among lower case, "
                    "upper case, digits and symbols",
                )
            )
        if self.is_common(password):
            failures.append(
                (PasswordRule.NOT_COMMON, "this password is in lists of common passwords")
            )
        if username and username.casefold() in password.casefold():
            failures.append(
                (PasswordRule.NOT_USERNAME, "the password must not contain the username")
            )
        if not failures and self.strength(password, [username]) < self.min_strength:
            failures.append(
                (
                    PasswordRule.STRENGTH,
                    "too easy to guess (predictable words, sequences or dates); "
                    "a few unrelated words make a strong password",
                )
            )
        if failures:
            raise WeakPasswordError(failures)
