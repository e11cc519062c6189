"""REGISTER flows through the registrar service, from real SIP text to responses and facts.

The scanner tests imitate what sipvicious does on the wire (svwar: compare the answers
for real and invented extensions; svcrack: answer each challenge with the next word of a
list and stop at the first 200), without sockets.
"""

from __future__ import annotations

import itertools
import re

import pytest

from plateau_contracts.events.calls import ExtensionRegistered, ExtensionUnregistered
from plateau_sip_gateway.domain.digest import (
    Algorithm,
    compute_ha1,
    compute_response,
    derive_credentials,
)
from plateau_sip_gateway.domain.directory import InMemoryDirectory
from plateau_sip_gateway.domain.guard import GuardPolicy
from plateau_sip_gateway.domain.registrar import RegistrarPolicy
from plateau_sip_gateway.registrar_service import Authenticated, RegistrarService
from plateau_sip_gateway.sip import SipRequest, SipResponse, parse

pytestmark = pytest.mark.unit

REALM = "pbx.example.com"
PHONE = ("192.0.2.10", 5062)
ATTACKER = ("203.0.113.66", 5060)
PASSWORD = "correct-horse"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def make_service(clock: Clock, **policies: object) -> RegistrarService:
    counter = itertools.count()
    directory = InMemoryDirectory([derive_credentials("1001", REALM, PASSWORD)])
    return RegistrarService.create(
        realm=REALM,
        secrets=[b"k" * 32],
        directory=directory,
        clock=clock,
        tag=lambda: f"tag{next(counter)}",
        **policies,
    )


_branches = itertools.count()


def register(
    user: str = "1001",
    *,
    cseq: int = 1,
    call_id: str = "a84b4c76e66710@192.0.2.10",
    contact: str | None = "<sip:1001@192.0.2.10:5062;transport=udp>",
    expires: int | None = 120,
    authorization: str | None = None,
    method: str = "REGISTER",
    uri: str = "sip:pbx.example.com",
    auth_header: str = "Authorization",
) -> SipRequest:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{next(_branches)};rport",
        "Max-Forwards: 70",
        f'From: "Agent" <sip:{user}@pbx.example.com>;tag=456248',
        f"To: <sip:{user}@pbx.example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization is not None:
        lines.append(f"{auth_header}: {authorization}")
    lines += ["User-Agent: baresip v1.0.0", "Content-Length: 0", "", ""]
    message = parse("\r\n".join(lines).encode())
    assert isinstance(message, SipRequest)
    return message


def authorization(
    challenge_response: SipResponse,
    *,
    user: str = "1001",
    password: str = PASSWORD,
    algorithm: str = "SHA-256",
    nc: int = 1,
    uri: str = "sip:pbx.example.com",
    method: str = "REGISTER",
    header: str = "WWW-Authenticate",
) -> str:
    """What a softphone answers to ``challenge_response`` (the challenge of ``algorithm``)."""
    values = (
        challenge_response.www_authenticate
        if header == "WWW-Authenticate"
        else challenge_response.proxy_authenticate
    )
    challenge = next(v for v in values if v.get("algorithm") == algorithm)
    alg = Algorithm.parse(algorithm)
    assert alg is not None
    nonce = challenge.get("nonce") or ""
    nc_text = f"{nc:08x}"
    response = compute_response(
        algorithm=alg,
        ha1=compute_ha1(alg, user, REALM, password),
        nonce=nonce,
        method=method,
        uri=uri,
        nc=nc_text,
        cnonce="0a4f113b",
    )
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc_text}, cnonce="0a4f113b"'
    )


def shape(response: SipResponse) -> tuple[int, str, tuple[str, ...], str]:
    """Everything a scanner could compare, with tags and nonces blanked out."""
    text = response.encode().decode()
    text = re.sub(r"tag=tag\d+", "tag=X", text)
    text = re.sub(r'nonce="[^"]*"', 'nonce="X"', text)
    # echoed from the request, which differs between the probes
    text = re.sub(r"branch=z9hG4bK\d+", "branch=X", text)
    text = re.sub(r"CSeq: \d+", "CSeq: X", text)
    return (response.status, response.reason, response.headers.names(), text)


# happy path ---------------------------------------------------------------------------


def test_first_register_is_challenged_with_sha256_then_md5() -> None:
    service = make_service(Clock())
    response, events = service.handle(register(), PHONE, "udp")
    assert (response.status, events) == (401, [])
    assert [v.get("algorithm") for v in response.www_authenticate] == ["SHA-256", "MD5"]
    assert all(
        v.get("qop") == "auth" and v.get("realm") == REALM for v in response.www_authenticate
    )
    assert response.to.tag is not None
    assert response.headers.names()[:5] == ("Via", "From", "To", "Call-ID", "CSeq")


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_answered_challenge_registers_the_contact(algorithm: str) -> None:
    clock = Clock()
    service = make_service(clock)
    challenge, _ = service.handle(register(), PHONE, "udp")
    auth = authorization(challenge, algorithm=algorithm)
    response, events = service.handle(register(cseq=2, authorization=auth), PHONE, "udp")
    assert response.status == 200
    assert response.to.tag is not None
    assert response.headers.get_all("Contact") == (
        "<sip:1001@192.0.2.10:5062;transport=udp>;expires=120",
    )
    assert response.expires == 120
    assert response.date is not None
    assert events == [
        ExtensionRegistered(
            extension="1001",
            contact="sip:1001@192.0.2.10:5062;transport=udp",
            expires_s=120,
            user_agent="baresip v1.0.0",
        )
    ]
    (binding,) = service.registrar.lookup("1001", clock.now)
    assert (binding.source, binding.transport) == (PHONE, "UDP")


def test_refresh_reuses_the_nonce_with_the_next_nonce_count() -> None:
    clock = Clock()
    service = make_service(clock)
    challenge, _ = service.handle(register(), PHONE, "udp")
    service.handle(register(cseq=2, authorization=authorization(challenge)), PHONE, "udp")
    clock.now += 60
    again = register(cseq=3, authorization=authorization(challenge, nc=2))
    response, events = service.handle(again, PHONE, "udp")
    assert response.status == 200 and len(events) == 1


def test_fetch_and_unregister_with_wildcard() -> None:
    clock = Clock()
    service = make_service(clock)
    challenge, _ = service.handle(register(), PHONE, "udp")
    service.handle(register(cseq=2, authorization=authorization(challenge)), PHONE, "udp")
    fetch = register(
        cseq=3, contact=None, expires=None, authorization=authorization(challenge, nc=2)
    )
    response, events = service.handle(fetch, PHONE, "udp")
    assert (response.status, len(response.contacts), events) == (200, 1, [])
    remove = register(cseq=4, contact="*", expires=0, authorization=authorization(challenge, nc=3))
    response, events = service.handle(remove, PHONE, "udp")
    assert (response.status, response.contacts) == (200, ())
    assert events == [ExtensionUnregistered(extension="1001", reason="unregistered")]


def test_too_brief_interval_gets_423_with_min_expires() -> None:
    service = make_service(Clock(), registrar=RegistrarPolicy(min_expires=60))
    challenge, _ = service.handle(register(expires=5), PHONE, "udp")
    response, _ = service.handle(
        register(cseq=2, expires=5, authorization=authorization(challenge)), PHONE, "udp"
    )
    assert (response.status, response.headers.get("Min-Expires")) == (423, "60")
    assert response.to.tag is not None


def test_sweep_reports_the_lapsed_extension() -> None:
    clock = Clock()
    service = make_service(clock)
    challenge, _ = service.handle(register(), PHONE, "udp")
    service.handle(register(cseq=2, authorization=authorization(challenge)), PHONE, "udp")
    clock.now += 121
    assert service.sweep() == [ExtensionUnregistered(extension="1001", reason="expired")]


# nonces -------------------------------------------------------------------------------


def test_expired_nonce_with_right_password_gets_stale_true() -> None:
    clock = Clock()
    service = make_service(clock)
    challenge, _ = service.handle(register(), PHONE, "udp")
    clock.now += 301
    response, _ = service.handle(
        register(cseq=2, authorization=authorization(challenge)), PHONE, "udp"
    )
    assert response.status == 401
    assert all(v.get("stale") == "true" for v in response.www_authenticate)
    # the client retries transparently with the new nonce
    response, _ = service.handle(
        register(cseq=3, authorization=authorization(response)), PHONE, "udp"
    )
    assert response.status == 200


def test_replayed_request_is_refused() -> None:
    service = make_service(Clock())
    challenge, _ = service.handle(register(), PHONE, "udp")
    captured = register(cseq=2, authorization=authorization(challenge))
    assert service.handle(captured, PHONE, "udp")[0].status == 200
    replay = register(cseq=3, authorization=authorization(challenge))  # same nonce, same nc
    response, events = service.handle(replay, PHONE, "udp")
    assert (response.status, events) == (401, [])
    assert response.www_authenticate[0].get("stale") == "true"


def test_digest_uri_other_than_the_request_uri_is_400() -> None:
    service = make_service(Clock())
    challenge, _ = service.handle(register(), PHONE, "udp")
    auth = authorization(challenge, uri="sip:elsewhere.example.com")
    response, _ = service.handle(register(cseq=2, authorization=auth), PHONE, "udp")
    assert response.status == 400


def test_equivalent_request_uri_is_accepted() -> None:
    service = make_service(Clock())
    challenge, _ = service.handle(register(), PHONE, "udp")
    auth = authorization(challenge, uri="sip:PBX.example.com")
    response, _ = service.handle(register(cseq=2, authorization=auth), PHONE, "udp")
    assert response.status == 200


# malformed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "contact",
    ["<sip:1001@192.0.2.10>;expires=soon", "<sip:1001@192.0.2.10>;q=2", "<tel:+242066123456>"],
)
def test_unusable_contact_is_400_before_any_challenge(contact: str) -> None:
    service = make_service(Clock())
    response, events = service.handle(register(contact=contact), PHONE, "udp")
    assert (response.status, events) == (400, [])
    assert response.to.tag is not None


def test_wildcard_without_expires_zero_is_400() -> None:
    service = make_service(Clock())
    response, _ = service.handle(register(contact="*", expires=60), PHONE, "udp")
    challenge = response
    if response.status == 401:
        auth = authorization(challenge)
        response, _ = service.handle(
            register(cseq=2, contact="*", expires=60, authorization=auth), PHONE, "udp"
        )
    assert response.status == 400


# anti-enumeration (svwar) ------------------------------------------------------------


def test_unknown_and_known_extensions_get_identical_challenges() -> None:
    service = make_service(Clock())
    real, _ = service.handle(register("1001"), ATTACKER, "udp")
    invented, _ = service.handle(register("1001"), ATTACKER, "udp")
    assert shape(real) == shape(invented)
    invented, _ = service.handle(register("7777"), ATTACKER, "udp")
    assert shape(real)[:3] == shape(invented)[:3]
    assert shape(real)[3].replace("1001", "U") == shape(invented)[3].replace("7777", "U")


def test_wrong_password_and_unknown_user_fail_identically() -> None:
    service = make_service(Clock())
    outcomes = []
    for user in ("1001", "7777"):
        challenge, _ = service.handle(register(user), ATTACKER, "udp")
        auth = authorization(challenge, user=user, password="guess")
        response, events = service.handle(
            register(user, cseq=2, authorization=auth), ATTACKER, "udp"
        )
        assert events == []
        outcomes.append(response)
    real, invented = outcomes
    assert (real.status, real.reason) == (invented.status, invented.reason) == (403, "Forbidden")
    assert real.headers.names() == invented.headers.names()
    assert shape(real)[3].replace("1001", "U") == shape(invented)[3].replace("7777", "U")


def test_authenticated_as_another_extension_is_the_same_403() -> None:
    service = make_service(Clock())
    challenge, _ = service.handle(register("1002"), PHONE, "udp")
    auth = authorization(challenge, user="1001")  # right password for 1001, To says 1002
    response, events = service.handle(register("1002", cseq=2, authorization=auth), PHONE, "udp")
    assert (response.status, events) == (403, [])


def test_svwar_style_scan_cannot_tell_real_from_invented() -> None:
    """svwar sends an unauthenticated REGISTER/INVITE/OPTIONS per extension and compares
    first lines with the answer for a surely-invented one."""
    service = make_service(Clock())
    for method in ("REGISTER", "INVITE"):
        answers = set()
        for user in ("1001", "100", "1002", "9999", "admin"):
            request = register(user, method=method, uri=f"sip:{user}@pbx.example.com")
            if method == "REGISTER":
                response, _ = service.handle(request, ATTACKER, "udp")
            else:
                result = service.gate.authenticate(request, ATTACKER)
                assert isinstance(result, SipResponse)
                response = result
            answers.add((response.start_line(), response.headers.names()))
        assert len(answers) == 1


# password guessing (svcrack) ---------------------------------------------------------


def svcrack(service: RegistrarService, words: list[str], source: tuple[str, int]) -> str | None:
    """Answer each challenge with the next word; a 200 is a find; 404 or unknown stops."""
    cseq = 0
    for word in words:
        cseq += 1
        challenge, _ = service.handle(register(cseq=cseq), source, "udp")
        assert challenge.status == 401
        cseq += 1
        auth = authorization(challenge, password=word, algorithm="MD5")
        response, _ = service.handle(register(cseq=cseq, authorization=auth), source, "udp")
        if response.status == 200:
            return word
        if response.status != 403:
            return None  # svcrack stops on anything it does not understand
    return None


def test_svcrack_style_guessing_never_finds_the_password() -> None:
    clock = Clock()
    service = make_service(clock)
    words = [f"word{i}" for i in range(1000)]
    words[500] = PASSWORD
    assert svcrack(service, words, ATTACKER) is None


def test_correct_password_while_locked_gets_exactly_the_wrong_password_answer() -> None:
    clock = Clock()
    service = make_service(clock)
    assert svcrack(service, ["a", "b", "c", "d", "e"], ATTACKER) is None  # now locked
    challenge, _ = service.handle(register(), ATTACKER, "udp")
    right = service.handle(
        register(cseq=2, authorization=authorization(challenge)), ATTACKER, "udp"
    )[0]
    wrong_auth = authorization(challenge, password="nope", nc=2)
    wrong = service.handle(register(cseq=3, authorization=wrong_auth), ATTACKER, "udp")[0]
    assert shape(right) == shape(wrong)
    assert right.status == 403
    clock.now += 31  # lock lapsed: the right password works again
    challenge, _ = service.handle(register(cseq=4), ATTACKER, "udp")
    response, _ = service.handle(
        register(cseq=5, authorization=authorization(challenge)), ATTACKER, "udp"
    )
    assert response.status == 200


def test_attacker_elsewhere_cannot_lock_out_the_registered_agent() -> None:
    clock = Clock()
    service = make_service(clock, guard=GuardPolicy(source_threshold=100))
    challenge, _ = service.handle(register(), PHONE, "udp")
    assert (
        service.handle(register(cseq=2, authorization=authorization(challenge)), PHONE, "udp")[
            0
        ].status
        == 200
    )
    # a botnet: five addresses, one wrong guess each, locks extension 1001
    for i in range(5):
        source = (f"198.51.100.{i}", 5060)
        challenge_i, _ = service.handle(register(), source, "udp")
        auth = authorization(challenge_i, password="guess")
        assert service.handle(register(cseq=2, authorization=auth), source, "udp")[0].status == 403
    newcomer = ("198.51.100.99", 5060)
    challenge_n, _ = service.handle(register(), newcomer, "udp")
    refused = service.handle(
        register(cseq=2, authorization=authorization(challenge_n)), newcomer, "udp"
    )
    assert refused[0].status == 403  # even with the right password
    clock.now += 60
    refresh = register(cseq=3, authorization=authorization(challenge, nc=2))
    assert service.handle(refresh, PHONE, "udp")[0].status == 200  # the agent's phone is fine


def test_per_source_lock_covers_every_user_from_that_source() -> None:
    service = make_service(Clock())
    for i, user in enumerate(("2001", "2002", "2003", "2004", "2005")):
        challenge, _ = service.handle(register(user), ATTACKER, "udp")
        auth = authorization(challenge, user=user, password="guess")
        service.handle(register(user, cseq=2 + i, authorization=auth), ATTACKER, "udp")
    challenge, _ = service.handle(register(), ATTACKER, "udp")
    response, _ = service.handle(
        register(cseq=9, authorization=authorization(challenge)), ATTACKER, "udp"
    )
    assert response.status == 403


# INVITE from a softphone ---------------------------------------------------------------


def test_invite_from_a_softphone_is_authenticated_with_407() -> None:
    service = make_service(Clock())
    invite = register(
        method="INVITE", uri="sip:+242066123456@pbx.example.com", contact=None, expires=None
    )
    challenge = service.gate.authenticate(invite, PHONE, proxy=True)
    assert isinstance(challenge, SipResponse)
    assert challenge.status == 407
    assert [v.get("algorithm") for v in challenge.proxy_authenticate] == ["SHA-256", "MD5"]
    auth = authorization(
        challenge,
        method="INVITE",
        uri="sip:+242066123456@pbx.example.com",
        header="Proxy-Authenticate",
    )
    answered = register(
        method="INVITE",
        uri="sip:+242066123456@pbx.example.com",
        cseq=2,
        contact=None,
        expires=None,
        authorization=auth,
        auth_header="Proxy-Authorization",
    )
    assert service.gate.authenticate(answered, PHONE, proxy=True) == Authenticated("1001")


def test_malformed_authorization_header_is_400() -> None:
    service = make_service(Clock())
    response, _ = service.handle(
        register(authorization='Digest username="1001", realm'), PHONE, "udp"
    )
    assert response.status == 400
