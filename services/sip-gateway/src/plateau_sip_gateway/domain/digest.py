"""Server-side HTTP Digest for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

What a registrar or a UAS needs to challenge a softphone and check its answer:

* ``DigestAuthenticator.challenges(source, now)`` gives the challenges to put in a 401/407,
  SHA-256 first and MD5 second (RFC 8760 §2.4 ordering), all sharing one nonce.
* ``DigestAuthenticator.verify(credentials, method=, request_uri=, source=, now=)`` checks
  an answer and says what to do: ``ACCEPTED``, ``CHALLENGE`` (no usable credentials),
  ``STALE`` (right password, nonce too old or already used: challenge with stale=true so
  the client retries without asking its user), ``MALFORMED`` (400) or ``REJECTED``.

Nonces are stateless: ``base64url(timestamp | salt | HMAC(secret, realm, source, ...))``,
so any replica holding the secret can check one, and rotating the secret keeps the old
ones valid while they live (pass ``[new, old]``). Replays are caught by requiring
``qop=auth`` and a strictly increasing nonce-count per nonce (``NonceCounter``, bounded).

``qop=auth`` is required. Without it (RFC 2069 style) the nonce-count is not part of the
hash, so a captured answer could be replayed for as long as its nonce lives; every
softphone Plateau targets (baresip, sipp, Linphone, Zoiper, desk phones) does ``qop=auth``.

Unknown users are indistinguishable from known ones: the challenge never depends on the
user, and verification of an unknown user runs the same hashes against a dummy HA1
derived from the secret (``verify`` always derives it, then uses the stored HA1 when
there is one), so the answer and its timing are the same as for a wrong password.

Pure: no I/O; time is passed in (``now``, seconds since the epoch: nonces cross replicas,
so it is wall-clock time), randomness is injected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum

from plateau_sip_gateway.domain.directory import CredentialDirectory, ExtensionCredentials


class Algorithm(StrEnum):
    """A digest algorithm, spelled as on the wire (RFC 7616 §6.1)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @property
    def base(self) -> Algorithm:
        """The algorithm whose HA1 is stored (``-sess`` variants derive theirs from it)."""
        return {Algorithm.MD5_SESS: Algorithm.MD5, Algorithm.SHA256_SESS: Algorithm.SHA256}.get(
            self, self
        )

    @property
    def is_session(self) -> bool:
        return self.value.endswith("-sess")

    @property
    def hex_length(self) -> int:
        return 32 if self.base is Algorithm.MD5 else 64

    @classmethod
    def parse(cls, text: str | None) -> Algorithm | None:
        """The algorithm named by ``text`` (case-insensitive; absent means MD5)."""
        if text is None:
            return cls.MD5
        wanted = text.lower()
        return next((a for a in cls if a.value.lower() == wanted), None)


def hash_hex(algorithm: Algorithm, data: str) -> str:
    """``H(data)`` in lower-case hex (RFC 7616 §3.4.1), the text encoded as UTF-8."""
    raw = data.encode("utf-8", "surrogateescape")
    if algorithm.base is Algorithm.MD5:
        return hashlib.md5(raw, usedforsecurity=False).hexdigest()
    return hashlib.sha256(raw).hexdigest()


def compute_ha1(algorithm: Algorithm, username: str, realm: str, password: str) -> str:
    """``H(username:realm:password)``: what the directory stores instead of the password."""
    return hash_hex(algorithm.base, f"{username}:{realm}:{password}")


def compute_response(
    *,
    algorithm: Algorithm,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = "auth",
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The ``response`` a client sends (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1).

    ``ha1`` is the stored ``H(username:realm:password)``; for ``-sess`` algorithms the
    session HA1 ``H(ha1:nonce:cnonce)`` is derived here. ``qop=None`` is the RFC 2069 form,
    offered only for test vectors: ``verify`` never accepts it.
    """
    if algorithm.is_session:
        ha1 = hash_hex(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = hash_hex(algorithm, f"{method}:{uri}")
    if qop is None:
        return hash_hex(algorithm, f"{ha1}:{nonce}:{ha2}")
    return hash_hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def derive_credentials(
    extension: str,
    realm: str,
    password: str,
    algorithms: Sequence[Algorithm] = (Algorithm.SHA256, Algorithm.MD5),
) -> ExtensionCredentials:
    """Credentials to provision for ``extension``: one HA1 per base algorithm; the
    password itself is not kept."""
    return ExtensionCredentials(
        extension=extension,
        realm=realm,
        ha1={a.base.value: compute_ha1(a, extension, realm, password) for a in algorithms},
    )


@dataclass(frozen=True)
class DigestPolicy:
    """How this server challenges.

    ``algorithms``: offered, in order (one challenge each). ``nonce_lifetime_s``: after
    this, a nonce is stale. ``bind_nonce_to_source``: a nonce only verifies from the
    address it was issued to. ``opaque``: issued and then required unchanged, when set.
    ``clock_skew_s``: how far in the future a nonce's time may be (replica clocks differ).

    Softphones that only know MD5 should skip a SHA-256 challenge (RFC 8760 §2.4), but
    baresip 1.0.0 with libre 1.1.0 (Debian) gives up on the whole 401 with ENOSYS when
    any challenge is SHA-256; a fleet of those needs ``algorithms=(Algorithm.MD5,)``.
    """

    realm: str
    algorithms: tuple[Algorithm, ...] = (Algorithm.SHA256, Algorithm.MD5)
    nonce_lifetime_s: int = 300
    bind_nonce_to_source: bool = True
    opaque: str | None = None
    clock_skew_s: int = 30

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("a digest policy must offer at least one algorithm")
        if self.nonce_lifetime_s <= 0:
            raise ValueError("nonce_lifetime_s must be positive")
        if '"' in self.realm or "\\" in self.realm:
            raise ValueError("a realm cannot contain quotes or backslashes")


@dataclass(frozen=True)
class Challenge:
    """One WWW-Authenticate / Proxy-Authenticate value, scheme ``Digest``."""

    realm: str
    nonce: str
    algorithm: Algorithm
    qop: str = "auth"
    stale: bool = False
    opaque: str | None = None

    def params(self) -> tuple[tuple[str, str, bool], ...]:
        """(name, value, quoted) triples in wire order: realm, nonce, [opaque,] algorithm,
        qop, [stale] (``AuthValue.of("Digest", challenge.params())``)."""
        items: list[tuple[str, str, bool]] = [
            ("realm", self.realm, True),
            ("nonce", self.nonce, True),
        ]
        if self.opaque is not None:
            items.append(("opaque", self.opaque, True))
        items += [("algorithm", self.algorithm.value, False), ("qop", self.qop, True)]
        if self.stale:
            items.append(("stale", "true", False))
        return tuple(items)

    def __str__(self) -> str:
        rendered = ", ".join(f'{k}="{v}"' if q else f"{k}={v}" for k, v, q in self.params())
        return f"Digest {rendered}"


@dataclass(frozen=True)
class DigestCredentials:
    """The parameters of one Digest Authorization / Proxy-Authorization value, unquoted."""

    params: Mapping[str, str]

    @classmethod
    def of(cls, pairs: Sequence[tuple[str, str]]) -> DigestCredentials:
        """From (name, unquoted value) pairs; names are lower-cased, the first one wins."""
        params: dict[str, str] = {}
        for key, value in pairs:
            params.setdefault(key.lower(), value)
        return cls(params)

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    @property
    def username(self) -> str | None:
        return self.params.get("username")

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


class Outcome(Enum):
    """What to answer to a request after checking its credentials."""

    ACCEPTED = "accepted"  # go ahead as ``username``
    CHALLENGE = "challenge"  # 401/407 with a fresh challenge
    STALE = "stale"  # 401/407 with stale=true: the password was right, the nonce is not
    MALFORMED = "malformed"  # 400: the credentials do not follow RFC 7616
    REJECTED = "rejected"  # wrong password, unknown user, or refused by the guard


@dataclass(frozen=True)
class Verification:
    """The result of checking one set of credentials.

    ``username`` is set whenever the credentials named one (even when rejected), so a
    guard can count the failure; ``password_ok`` says whether the hash matched (the
    guard refuses some correct passwords). ``detail`` is for logs, never for the peer.
    """

    outcome: Outcome
    username: str | None = None
    password_ok: bool = False
    detail: str = ""


class NonceCounter:
    """Highest nonce-count seen per nonce, to refuse replays; bounded memory.

    A nonce is remembered until it expires or until ``max_nonces`` newer ones push it
    out. Once one is pushed out early, any nonce issued no later than it that is not
    remembered is treated as used up (``watermark``), so eviction can never reopen a
    replay; its client just gets a stale challenge. A nonce first seen here (issued by
    another replica) is accepted once with any count, then tracked. Cross-replica replay
    protection therefore needs source-sticky load balancing, which SIP over UDP has anyway.
    """

    def __init__(self, max_nonces: int = 100_000) -> None:
        if max_nonces <= 0:
            raise ValueError("max_nonces must be positive")
        self._max = max_nonces
        # nonce -> (issued_at, expires_at, highest nc)
        self._seen: OrderedDict[str, tuple[float, float, int]] = OrderedDict()
        self._watermark = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def is_fresh(self, nonce: str, issued_at: float, nc: int) -> bool:
        """Whether ``nc`` is higher than any count already accepted for ``nonce``."""
        entry = self._seen.get(nonce)
        if entry is None:
            return issued_at > self._watermark
        return nc > entry[2]

    def accept(self, nonce: str, issued_at: float, expires_at: float, nc: int, now: float) -> None:
        """Record ``nc`` as used (call only after the digest verified)."""
        self._forget_expired(now)
        self._seen[nonce] = (issued_at, expires_at, nc)
        self._seen.move_to_end(nonce)
        while len(self._seen) > self._max:
            _, (evicted_issued_at, _, _) = self._seen.popitem(last=False)
            self._watermark = max(self._watermark, evicted_issued_at)

    def _forget_expired(self, now: float) -> None:
        # Entries are in last-use order, not expiry order: scan from the oldest use and
        # stop at the first live one; the rest go when they reach the front or overflow.
        while self._seen:
            nonce, (_, expires_at, _) = next(iter(self._seen.items()))
            if expires_at > now:
                return
            del self._seen[nonce]


_NONCE_VERSION = b"plateau-nonce-v1"
_NONCE_BYTES = 8 + 8 + 16  # timestamp, salt, truncated HMAC
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_REQUIRED = ("username", "realm", "nonce", "uri", "response")


@dataclass(frozen=True)
class _Answer:
    username: str
    algorithm: Algorithm
    nonce: str
    uri: str
    nc: str
    cnonce: str
    response: str
    opaque: str


@dataclass(frozen=True)
class _Nonce:
    issued_at: float
    expired: bool


class DigestAuthenticator:
    """Issues challenges and verifies answers for one realm (see the module docstring).

    ``secrets``: the HMAC keys, the first one signing; all of them verify (rotation).
    ``directory``: where HA1s come from. ``uri_matches(digest_uri, request_uri)``: how the
    ``uri`` parameter is compared with the Request-URI (exact text by default; the SIP
    layer passes RFC 3261 URI equivalence). ``random_bytes``: the nonce salt source.
    """

    def __init__(
        self,
        policy: DigestPolicy,
        secrets: Sequence[bytes],
        directory: CredentialDirectory,
        *,
        nonce_counter: NonceCounter | None = None,
        uri_matches: Callable[[str, str], bool] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not secrets or any(len(s) < 16 for s in secrets):
            raise ValueError("digest secrets must be given, each at least 16 bytes long")
        self.policy = policy
        self._secrets = tuple(secrets)
        self._directory = directory
        self._counter = nonce_counter if nonce_counter is not None else NonceCounter()
        self._uri_matches = uri_matches or _same_text
        self._random = random_bytes

    # challenges --------------------------------------------------------------------

    def new_nonce(self, source: str, now: float) -> str:
        """A signed nonce issued at ``now`` to ``source`` (a host)."""
        head = struct.pack(">Q", int(now)) + self._random(8)
        mac = self._mac(self._secrets[0], head, source)
        return base64.urlsafe_b64encode(head + mac).rstrip(b"=").decode("ascii")

    def challenges(self, source: str, now: float, *, stale: bool = False) -> tuple[Challenge, ...]:
        """One challenge per offered algorithm, all with the same fresh nonce."""
        nonce = self.new_nonce(source, now)
        policy = self.policy
        return tuple(
            Challenge(policy.realm, nonce, algorithm, stale=stale, opaque=policy.opaque)
            for algorithm in policy.algorithms
        )

    # verification ------------------------------------------------------------------

    def verify(
        self,
        credentials: DigestCredentials | None,
        *,
        method: str,
        request_uri: str,
        source: str,
        now: float,
        refuse: bool = False,
    ) -> Verification:
        """Check ``credentials`` sent with a ``method`` request to ``request_uri``.

        ``refuse``: the guard has already decided to refuse this user or source. The full
        check still runs, so a refusal takes as long as a verification, but the outcome
        is REJECTED and no nonce-count is consumed.
        """
        answer = self._read(credentials, request_uri)
        if isinstance(answer, Verification):
            return answer
        username = answer.username
        nonce = self._open_nonce(answer.nonce, source, now)
        if nonce is None:
            return Verification(Outcome.CHALLENGE, username, detail="nonce not ours")
        expected = compute_response(
            algorithm=answer.algorithm,
            ha1=self._ha1(username, answer.algorithm),
            nonce=answer.nonce,
            method=method,
            uri=answer.uri,
            qop="auth",
            nc=answer.nc,
            cnonce=answer.cnonce,
        )
        opaque_ok = self.policy.opaque is None or hmac.compare_digest(
            answer.opaque.encode(), self.policy.opaque.encode()
        )
        password_ok = hmac.compare_digest(expected.encode(), answer.response.encode())
        password_ok = password_ok and opaque_ok
        if refuse or not password_ok:
            return Verification(Outcome.REJECTED, username, password_ok, "refused or wrong")
        count = int(answer.nc, 16)
        if nonce.expired:
            return Verification(Outcome.STALE, username, True, "nonce expired")
        if not self._counter.is_fresh(answer.nonce, nonce.issued_at, count):
            return Verification(Outcome.STALE, username, True, "nonce-count replayed")
        expires_at = nonce.issued_at + self.policy.nonce_lifetime_s
        self._counter.accept(answer.nonce, nonce.issued_at, expires_at, count, now)
        return Verification(Outcome.ACCEPTED, username, True)

    def _read(
        self, credentials: DigestCredentials | None, request_uri: str
    ) -> _Answer | Verification:
        """The credentials' fields once their form is checked, or what to answer instead."""
        if credentials is None or credentials.realm != self.policy.realm:
            return Verification(Outcome.CHALLENGE, detail="no credentials for this realm")
        missing = [name for name in _REQUIRED if not credentials.get(name)]
        if missing:
            return Verification(Outcome.MALFORMED, detail=f"missing {', '.join(missing)}")
        username = credentials.username or ""
        algorithm = Algorithm.parse(credentials.get("algorithm"))
        if algorithm is None or algorithm not in self.policy.algorithms:
            return Verification(Outcome.CHALLENGE, username, detail="algorithm not offered")
        qop, nc, cnonce = (credentials.get(n) or "" for n in ("qop", "nc", "cnonce"))
        if qop.lower() != "auth" or _NC_RE.fullmatch(nc) is None or not cnonce:
            detail = "qop=auth with an 8-digit hex nc and a cnonce is required"
            return Verification(Outcome.MALFORMED, username, detail=detail)
        uri = credentials.get("uri") or ""
        if not self._uri_matches(uri, request_uri):
            return Verification(Outcome.MALFORMED, username, detail="uri is not the Request-URI")
        return _Answer(
            username=username,
            algorithm=algorithm,
            nonce=credentials.get("nonce") or "",
            uri=uri,
            nc=nc,
            cnonce=cnonce,
            response=(credentials.get("response") or "").lower(),
            opaque=credentials.get("opaque") or "",
        )

    # internals ---------------------------------------------------------------------

    def _ha1(self, username: str, algorithm: Algorithm) -> str:
        # The dummy is always derived, so a known user costs the same as an unknown one.
        dummy = hmac.new(
            self._secrets[0],
            f"dummy-ha1|{self.policy.realm}|{algorithm.base.value}|{username}".encode(
                "utf-8", "surrogateescape"
            ),
            hashlib.sha256,
        ).hexdigest()[: algorithm.hex_length]
        known = self._directory.credentials(username)
        if known is None or known.realm != self.policy.realm:
            return dummy
        return known.ha1.get(algorithm.base.value, dummy)

    def _mac(self, secret: bytes, head: bytes, source: str) -> bytes:
        bound = source if self.policy.bind_nonce_to_source else ""
        message = b"|".join(
            (_NONCE_VERSION, self.policy.realm.encode(), bound.encode("utf-8"), head)
        )
        return hmac.new(secret, message, hashlib.sha256).digest()[:16]

    def _open_nonce(self, text: str, source: str, now: float) -> _Nonce | None:
        if len(text) != 43:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=")
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        head, mac = raw[:16], raw[16:]
        if not any(hmac.compare_digest(self._mac(s, head, source), mac) for s in self._secrets):
            return None
        (issued_at,) = struct.unpack(">Q", head[:8])
        if issued_at > now + self.policy.clock_skew_s:
            return None
        return _Nonce(float(issued_at), now - issued_at >= self.policy.nonce_lifetime_s)


def _same_text(digest_uri: str, request_uri: str) -> bool:
    return digest_uri == request_uri


__all__ = [
    "Algorithm",
    "Challenge",
    "DigestAuthenticator",
    "DigestCredentials",
    "DigestPolicy",
    "NonceCounter",
    "Outcome",
    "Verification",
    "compute_ha1",
    "compute_response",
    "derive_credentials",
    "hash_hex",
]
