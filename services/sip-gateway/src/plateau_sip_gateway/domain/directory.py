"""The extension directory port: which softphone extensions exist and their digest HA1s.

The registrar only ever asks "what are the credentials of this user name?"; where they
come from (a provisioning file, a table kept in step with the access-gateway) is an
adapter's business. Passwords are never stored: an extension carries one HA1 per digest
algorithm (``H(extension:realm:password)``, see ``digest.derive_credentials``).

The port is synchronous on purpose: it is consulted on every authenticated request, and
must take the same time for a user that exists and one that does not (an adapter backed
by a database keeps an in-memory snapshot rather than querying per request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ExtensionCredentials:
    """What the directory knows about one extension: its realm and HA1 per algorithm.

    ``ha1`` maps a base algorithm name (``"MD5"``, ``"SHA-256"``) to the lower-case hex
    ``H(extension:realm:password)``.
    """

    extension: str
    realm: str
    ha1: Mapping[str, str] = field(default_factory=dict)


class CredentialDirectory(Protocol):
    """Looks up an extension's credentials by digest user name."""

    def credentials(self, username: str) -> ExtensionCredentials | None:
        """The credentials of ``username``, or None when there is no such extension."""
        ...


class InMemoryDirectory:
    """A directory held in memory: for tests, and for extensions provisioned from a file."""

    def __init__(self, entries: Iterable[ExtensionCredentials] = ()) -> None:
        self._entries = {e.extension: e for e in entries}

    def credentials(self, username: str) -> ExtensionCredentials | None:
        return self._entries.get(username)

    def put(self, entry: ExtensionCredentials) -> None:
        """Add or replace an extension (a password change replaces its HA1s)."""
        self._entries[entry.extension] = entry

    def remove(self, extension: str) -> None:
        self._entries.pop(extension, None)


__all__ = ["CredentialDirectory", "ExtensionCredentials", "InMemoryDirectory"]
