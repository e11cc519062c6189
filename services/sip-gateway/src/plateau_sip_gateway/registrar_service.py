"""The registrar as a transaction user: a parsed REGISTER in, a response and facts out.

Wiring (the endpoint calls these from its server transactions)::

    directory = InMemoryDirectory([derive_credentials("1001", realm, password), ...])
    service = RegistrarService.create(realm=realm, secrets=[key], directory=directory)
    response, events = service.handle(request, source=(host, port), transport="UDP")
    # send ``response`` on the transaction, append ``events`` to the event store
    service.sweep()            # every few seconds (or at service.registrar.next_expiry())
    service.registrar.lookup("1001", now)   # where to ring an agent

    # an INVITE (or any request) from an agent's softphone:
    result = service.gate.authenticate(request, source, proxy=False)   # 401 challenges
    if isinstance(result, SipResponse): send(result)                    # 401/407, 403, 400
    else: result.username                                               # go ahead

What a scanner sees (svwar compares answers for real and invented extensions, svcrack
guesses passwords; see ``domain.guard`` and ``domain.digest``):

* no credentials (or credentials for another realm, a nonce not ours, an algorithm not
  offered): 401 with one WWW-Authenticate per algorithm, SHA-256 then MD5; never
  anything that depends on the user;
* wrong password, unknown user, a user other than the To extension, and any attempt the
  guard refuses (even with the right password): 403 Forbidden with the same headers in
  the same order, after the same hashing work; svcrack counts 403 as "wrong password"
  and only ever reports a password on a 200;
* right password but a nonce that expired or whose nonce-count was already used: 401
  with ``stale=true``, so the softphone retries at once without asking its user;
* malformed requests or credentials: 400, decided from syntax alone;
* 404 never: it would say which extensions exist.

Every final response carries a To tag. No Server header: it would only help fingerprinting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from plateau_contracts.events.calls import ExtensionEvent, ExtensionUnregistered
from plateau_sip_gateway.domain.digest import (
    DigestAuthenticator,
    DigestCredentials,
    DigestPolicy,
    NonceCounter,
    Outcome,
)
from plateau_sip_gateway.domain.directory import CredentialDirectory
from plateau_sip_gateway.domain.guard import ALLOWED, Guard, GuardPolicy
from plateau_sip_gateway.domain.registrar import (
    Binding,
    ContactRequest,
    Registered,
    RegisterRequest,
    Registrar,
    RegistrarPolicy,
)
from plateau_sip_gateway.sip import (
    AuthValue,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    format_date,
    parse_uri,
)
from plateau_sip_gateway.sip.headers import split_list
from plateau_sip_gateway.sip.values import MAX_UINT32, parse_name_addr, parse_uint

Source = tuple[str, int]


def new_tag() -> str:
    """A random To tag (RFC 3261 §19.3: at least 32 bits of randomness)."""
    return os.urandom(6).hex()


def uri_matches(first: str, second: str) -> bool:
    """Whether two URIs are the same under RFC 3261 §19.1.4 (exact text always is)."""
    if first == second:
        return True
    try:
        return parse_uri(first).equivalent(parse_uri(second))
    except SipParseError:
        return False


@dataclass(frozen=True)
class Authenticated:
    """The request's credentials are good: it comes from ``username``."""

    username: str


class SipAuthenticator:
    """Digest authentication of any request, with the guard in front (REGISTER, INVITE...).

    ``authenticate`` returns ``Authenticated`` or the response to send instead.
    ``proxy=True`` uses Proxy-Authorization and answers 407 (RFC 3261 §22.3); otherwise
    Authorization and 401 (§22.2).
    """

    def __init__(
        self,
        authenticator: DigestAuthenticator,
        guard: Guard,
        *,
        clock: Callable[[], float] = time.time,
        tag: Callable[[], str] = new_tag,
    ) -> None:
        self.authenticator = authenticator
        self.guard = guard
        self._clock = clock
        self._tag = tag

    def authenticate(
        self, request: SipRequest, source: Source, *, proxy: bool = False
    ) -> Authenticated | SipResponse:
        try:
            credentials = self._credentials(request, proxy)
        except SipParseError as exc:
            return self.bad_request(request, f"Malformed credentials: {exc.reason}")
        now = self._clock()
        host = source[0]
        username = credentials.username if credentials is not None else None
        decision = self.guard.check(username, host, now) if username else ALLOWED
        verification = self.authenticator.verify(
            credentials,
            method=request.method,
            request_uri=str(request.uri),
            source=host,
            now=now,
            refuse=not decision.allowed,
        )
        outcome = verification.outcome
        if outcome is Outcome.ACCEPTED and verification.username is not None:
            self.guard.record_success(verification.username, host, now)
            return Authenticated(verification.username)
        if outcome is Outcome.MALFORMED:
            return self.bad_request(request, "Malformed credentials")
        if outcome is Outcome.REJECTED:
            if decision.allowed and verification.username is not None:
                self.guard.record_failure(verification.username, host, now)
            return self.forbidden(request)
        return self.challenge(request, source, proxy=proxy, stale=outcome is Outcome.STALE)

    def challenge(
        self, request: SipRequest, source: Source, *, proxy: bool = False, stale: bool = False
    ) -> SipResponse:
        """401 (or 407) with one challenge per offered algorithm."""
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        challenges = self.authenticator.challenges(source[0], self._clock(), stale=stale)
        return request.create_response(
            407 if proxy else 401,
            to_tag=self._tag(),
            headers=[(name, str(AuthValue.of("Digest", c.params()))) for c in challenges],
        )

    def forbidden(self, request: SipRequest) -> SipResponse:
        """The one answer to every failed or refused attempt, whoever the user."""
        return request.create_response(403, to_tag=self._tag())

    def bad_request(self, request: SipRequest, reason: str) -> SipResponse:
        return request.create_response(400, reason, to_tag=self._tag())

    def _credentials(self, request: SipRequest, proxy: bool) -> DigestCredentials | None:
        values: tuple[AuthValue, ...] = (
            request.proxy_authorization if proxy else request.authorization
        )
        realm = self.authenticator.policy.realm
        for value in values:
            if value.is_digest and value.get("realm") == realm:
                return DigestCredentials.of([(k, value.get(k) or "") for k, _ in value.params])
        return None


class RegistrarService:
    """REGISTER handling: checks, digest authentication, bindings, response, events."""

    def __init__(
        self,
        gate: SipAuthenticator,
        registrar: Registrar,
        *,
        clock: Callable[[], float] = time.time,
        tag: Callable[[], str] = new_tag,
    ) -> None:
        self.gate = gate
        self.registrar = registrar
        self._clock = clock
        self._tag = tag
        # Several replicas: told each extension whose bindings changed, with its bindings.
        self.on_change: Callable[[str, tuple[Binding, ...]], None] | None = None

    @classmethod
    def create(
        cls,
        *,
        realm: str,
        secrets: Sequence[bytes],
        directory: CredentialDirectory,
        digest: DigestPolicy | None = None,
        guard: GuardPolicy | None = None,
        registrar: RegistrarPolicy | None = None,
        clock: Callable[[], float] = time.time,
        tag: Callable[[], str] = new_tag,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> RegistrarService:
        """A service with the usual parts; the policies default to ``DigestPolicy(realm)``,
        ``GuardPolicy()`` and ``RegistrarPolicy()``."""
        authenticator = DigestAuthenticator(
            digest or DigestPolicy(realm),
            secrets,
            directory,
            nonce_counter=NonceCounter(),
            uri_matches=uri_matches,
            random_bytes=random_bytes,
        )
        gate = SipAuthenticator(authenticator, Guard(guard), clock=clock, tag=tag)
        return cls(gate, Registrar(registrar, same_contact=uri_matches), clock=clock, tag=tag)

    def handle(
        self, request: SipRequest, source: Source, transport: str, *, relayed: bool = False
    ) -> tuple[SipResponse, list[ExtensionEvent]]:
        """Answer one REGISTER received from ``source`` over ``transport``.

        ``relayed``: it came through a trusted edge proxy, whose Path (RFC 3327) is stored
        with the bindings so calls to the softphone go back through it; a Path from
        anywhere else is ignored (it would let a phone send the gateway's INVITEs
        anywhere). The Path is echoed in the 200 when the REGISTER says
        ``Supported: path`` (§5.3)."""
        if request.method != "REGISTER":
            raise ValueError(f"the registrar handles REGISTER, not {request.method}")
        try:
            command = _register_request(request, source, transport, relayed=relayed)
        except SipParseError as exc:
            return self.gate.bad_request(request, f"Bad Request ({exc.reason[:100]})"), []
        auth = self.gate.authenticate(request, source)
        if isinstance(auth, SipResponse):
            return auth, []
        if auth.username != command.aor:
            # Authenticated, but not for this extension: the same 403 as a wrong password.
            return self.gate.forbidden(request), []
        now = self._clock()
        result = self.registrar.register(command, now)
        if self.on_change is not None and (isinstance(result, Registered) or result.events):
            self.on_change(command.aor, self.registrar.lookup(command.aor, now))
        if not isinstance(result, Registered):
            headers = []
            if result.min_expires is not None:
                headers.append(("Min-Expires", str(result.min_expires)))
            response = request.create_response(result.status, to_tag=self._tag(), headers=headers)
            return response, list(result.events)
        headers = [
            ("Contact", _contact_value(b.contact, b.expires_in(now), b.q)) for b in result.bindings
        ]
        granted = {
            b.expires_in(now)
            for b in result.bindings
            if b.call_id == command.call_id and b.cseq == command.cseq
        }
        if len(granted) == 1:
            headers.append(("Expires", str(granted.pop())))
        if command.path and "path" in (tag.lower() for tag in request.supported):
            headers.extend(("Path", hop) for hop in command.path)
        headers.append(("Date", format_date(datetime.fromtimestamp(now, UTC))))
        response = request.create_response(200, to_tag=self._tag(), headers=headers)
        return response, list(result.events)

    def sweep(self) -> list[ExtensionUnregistered]:
        """Drop lapsed bindings; the ``extension.unregistered`` facts to record."""
        events = self.registrar.sweep(self._clock())
        if self.on_change is not None:
            for event in events:
                self.on_change(event.extension, ())
        return events


def _register_request(
    request: SipRequest, source: Source, transport: str, *, relayed: bool = False
) -> RegisterRequest:
    """The REGISTER reduced to what the registrar needs; SipParseError when malformed."""
    to_uri = request.to.uri
    if not isinstance(to_uri, SipUri) or not to_uri.user:
        raise SipParseError("the To of a REGISTER must be a SIP URI naming an extension")
    contacts = tuple(_contact(value) for value in request.contacts)
    wildcard = request.is_contact_wildcard
    if not wildcard and "*" in request.headers.get_all("Contact"):
        raise SipParseError("Contact: * cannot be combined with other contacts")
    return RegisterRequest(
        aor=to_uri.unescaped_user or "",
        call_id=request.call_id,
        cseq=request.cseq.number,
        contacts=contacts,
        wildcard=wildcard,
        expires=request.expires,
        user_agent=request.headers.get("User-Agent"),
        source=source,
        transport=transport.upper(),
        path=_path(request) if relayed else (),
    )


def _path(request: SipRequest) -> tuple[str, ...]:
    """The Path vector (RFC 3327), each hop as ``<uri>`` in order; SipParseError when a
    hop is not a SIP URI."""
    hops: list[str] = []
    for value in request.headers.get_all("Path"):
        for part in split_list(value):
            hop = parse_name_addr(part, "Path")
            if not isinstance(hop.uri, SipUri):
                raise SipParseError("a Path hop must be a SIP URI")
            hops.append(f"<{hop.uri}>")
    return tuple(hops)


def _contact(value: NameAddr) -> ContactRequest:
    raw_expires = value.params.get("expires")
    expires = None if raw_expires is None else parse_uint(raw_expires, MAX_UINT32, "expires")
    if "q" in value.params and value.q is None:
        raise SipParseError(f"Contact q is not a number from 0 to 1: {value.params.get('q')!r}")
    if not isinstance(value.uri, SipUri):
        raise SipParseError("a softphone Contact must be a SIP or SIPS URI")
    return ContactRequest(uri=str(value.uri), expires=expires, q=value.q)


def _contact_value(uri: str, expires: int, q: float | None) -> str:
    q_param = "" if q is None else f";q={q:g}"
    return f"<{uri}>;expires={expires}{q_param}"


__all__ = [
    "Authenticated",
    "RegistrarService",
    "SipAuthenticator",
    "new_tag",
    "uri_matches",
]
