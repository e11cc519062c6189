"""Digest computation (published RFC vectors) and server-side verification."""

from __future__ import annotations

import itertools

import pytest

from plateau_sip_gateway.domain.digest import (
    Algorithm,
    DigestAuthenticator,
    DigestCredentials,
    DigestPolicy,
    NonceCounter,
    Outcome,
    Verification,
    compute_ha1,
    compute_response,
    derive_credentials,
    hash_hex,
)
from plateau_sip_gateway.domain.directory import InMemoryDirectory

pytestmark = pytest.mark.unit

REALM = "pbx.example.com"
SECRET = b"0123456789abcdef0123456789abcdef"
URI = "sip:pbx.example.com"
SOURCE = "192.0.2.10"
T0 = 1_700_000_000.0


# published test vectors -------------------------------------------------------------


def test_rfc2617_md5_qop_auth_vector() -> None:
    ha1 = compute_ha1(Algorithm.MD5, "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        algorithm=Algorithm.MD5,
        ha1=ha1,
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (Algorithm.SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_vectors(algorithm: Algorithm, expected: str) -> None:
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = compute_response(
        algorithm=algorithm,
        ha1=ha1,
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == expected


def test_sess_variants_hash_the_stored_ha1_with_nonce_and_cnonce() -> None:
    ha1 = compute_ha1(Algorithm.SHA256, "1001", REALM, "pw")
    session = compute_response(
        algorithm=Algorithm.SHA256_SESS,
        ha1=ha1,
        nonce="n",
        method="REGISTER",
        uri=URI,
        nc="00000001",
        cnonce="c",
    )
    manual = compute_response(
        algorithm=Algorithm.SHA256,
        ha1=hash_hex(Algorithm.SHA256, f"{ha1}:n:c"),
        nonce="n",
        method="REGISTER",
        uri=URI,
        nc="00000001",
        cnonce="c",
    )
    assert session == manual


def test_algorithm_names_parse_case_insensitively_and_default_to_md5() -> None:
    assert Algorithm.parse(None) is Algorithm.MD5
    assert Algorithm.parse("sha-256") is Algorithm.SHA256
    assert Algorithm.parse("md5-SESS") is Algorithm.MD5_SESS
    assert Algorithm.parse("SHA-512-256") is None


def test_derived_credentials_hold_ha1_per_algorithm_never_the_password() -> None:
    creds = derive_credentials("1001", REALM, "s3cret")
    assert set(creds.ha1) == {"MD5", "SHA-256"}
    assert creds.ha1["MD5"] == compute_ha1(Algorithm.MD5, "1001", REALM, "s3cret")
    assert "s3cret" not in repr(creds)


# verification ------------------------------------------------------------------------


def make_authenticator(**policy: object) -> DigestAuthenticator:
    counter = itertools.count()
    directory = InMemoryDirectory([derive_credentials("1001", REALM, "right")])
    return DigestAuthenticator(
        DigestPolicy(REALM, **policy),
        [SECRET],
        directory,
        random_bytes=lambda n: next(counter).to_bytes(n, "big"),
    )


def answer(
    nonce: str,
    *,
    user: str = "1001",
    password: str = "right",
    algorithm: Algorithm = Algorithm.SHA256,
    nc: str = "00000001",
    uri: str = URI,
    method: str = "REGISTER",
    **extra: str,
) -> DigestCredentials:
    response = compute_response(
        algorithm=algorithm,
        ha1=compute_ha1(algorithm, user, REALM, password),
        nonce=nonce,
        method=method,
        uri=uri,
        nc=nc,
        cnonce="cn0nce",
    )
    params = {
        "username": user,
        "realm": REALM,
        "nonce": nonce,
        "uri": uri,
        "response": response,
        "algorithm": algorithm.value,
        "qop": "auth",
        "nc": nc,
        "cnonce": "cn0nce",
        **extra,
    }
    return DigestCredentials.of(list(params.items()))


def verify(
    auth: DigestAuthenticator, creds: DigestCredentials | None, now: float = T0, **kw: object
) -> Verification:
    args = {"method": "REGISTER", "request_uri": URI, "source": SOURCE, "now": now, **kw}
    return auth.verify(creds, **args)


def test_challenges_offer_sha256_then_md5_with_one_nonce_and_qop_auth() -> None:
    auth = make_authenticator()
    first, second = auth.challenges(SOURCE, T0)
    assert (first.algorithm, second.algorithm) == (Algorithm.SHA256, Algorithm.MD5)
    assert first.nonce == second.nonce
    assert [name for name, _, _ in first.params()] == ["realm", "nonce", "algorithm", "qop"]
    assert str(first).startswith(f'Digest realm="{REALM}", nonce="')
    assert 'qop="auth"' in str(first)


@pytest.mark.parametrize("algorithm", [Algorithm.SHA256, Algorithm.MD5])
def test_right_password_is_accepted(algorithm: Algorithm) -> None:
    auth = make_authenticator()
    nonce = auth.new_nonce(SOURCE, T0)
    result = verify(auth, answer(nonce, algorithm=algorithm), T0 + 1)
    assert result.outcome is Outcome.ACCEPTED
    assert result.username == "1001"


def test_sess_algorithms_verify_when_offered() -> None:
    auth = make_authenticator(algorithms=(Algorithm.SHA256_SESS, Algorithm.MD5_SESS))
    nonce = auth.new_nonce(SOURCE, T0)
    assert verify(auth, answer(nonce, algorithm=Algorithm.MD5_SESS)).outcome is Outcome.ACCEPTED


def test_wrong_password_and_unknown_user_are_rejected_alike() -> None:
    auth = make_authenticator()
    nonce = auth.new_nonce(SOURCE, T0)
    wrong = verify(auth, answer(nonce, password="guess"))
    unknown = verify(auth, answer(nonce, user="9999", password="guess"))
    assert (wrong.outcome, wrong.password_ok) == (unknown.outcome, unknown.password_ok)
    assert wrong.outcome is Outcome.REJECTED


def test_expired_nonce_with_right_password_is_stale() -> None:
    auth = make_authenticator(nonce_lifetime_s=60)
    nonce = auth.new_nonce(SOURCE, T0)
    assert verify(auth, answer(nonce), T0 + 61).outcome is Outcome.STALE
    # a stale answer only confirms what a normal attempt would: wrong stays REJECTED
    assert verify(auth, answer(nonce, password="x"), T0 + 61).outcome is Outcome.REJECTED


def test_nonce_count_must_strictly_increase() -> None:
    auth = make_authenticator()
    nonce = auth.new_nonce(SOURCE, T0)
    assert verify(auth, answer(nonce, nc="00000001")).outcome is Outcome.ACCEPTED
    assert verify(auth, answer(nonce, nc="00000001")).outcome is Outcome.STALE
    assert verify(auth, answer(nonce, nc="00000002")).outcome is Outcome.ACCEPTED
    assert verify(auth, answer(nonce, nc="00000002")).outcome is Outcome.STALE


def test_failed_or_refused_answers_do_not_consume_the_nonce_count() -> None:
    auth = make_authenticator()
    nonce = auth.new_nonce(SOURCE, T0)
    assert verify(auth, answer(nonce, nc="000000ff", password="x")).outcome is Outcome.REJECTED
    refused = verify(auth, answer(nonce, nc="000000fe"), refuse=True)
    assert (refused.outcome, refused.password_ok) == (Outcome.REJECTED, True)
    assert verify(auth, answer(nonce, nc="00000001")).outcome is Outcome.ACCEPTED


def test_uri_must_match_the_request_uri() -> None:
    auth = make_authenticator()
    nonce = auth.new_nonce(SOURCE, T0)
    creds = answer(nonce, uri="sip:other.example.com")
    assert verify(auth, creds).outcome is Outcome.MALFORMED


def test_uri_comparison_is_injectable() -> None:
    auth = DigestAuthenticator(
        DigestPolicy(REALM),
        [SECRET],
        InMemoryDirectory([derive_credentials("1001", REALM, "right")]),
        uri_matches=lambda a, b: a.lower() == b.lower(),
    )
    nonce = auth.new_nonce(SOURCE, T0)
    assert verify(auth, answer(nonce, uri=URI.upper())).outcome is Outcome.ACCEPTED


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        ({"realm": "other"}, Outcome.CHALLENGE),
        ({"algorithm": "SHA-512-256"}, Outcome.CHALLENGE),
        ({"nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, Outcome.CHALLENGE),
        ({"nonce": "short"}, Outcome.CHALLENGE),
        ({"qop": "auth-int"}, Outcome.MALFORMED),
        ({"nc": "1"}, Outcome.MALFORMED),
        ({"cnonce": ""}, Outcome.MALFORMED),
        ({"response": ""}, Outcome.MALFORMED),
    ],
)
def test_unusable_credentials(change: dict[str, str], outcome: Outcome) -> None:
    auth = make_authenticator()
    nonce = auth.new_nonce(SOURCE, T0)
    params = {**answer(nonce).params, **change}
    assert verify(auth, DigestCredentials(params)).outcome is outcome


def test_rfc2069_answers_without_qop_are_refused() -> None:
    auth = make_authenticator()
    nonce = auth.new_nonce(SOURCE, T0)
    params = {k: v for k, v in answer(nonce).params.items() if k not in ("qop", "nc", "cnonce")}
    assert verify(auth, DigestCredentials(params)).outcome is Outcome.MALFORMED


def test_no_credentials_means_challenge() -> None:
    assert verify(make_authenticator(), None).outcome is Outcome.CHALLENGE


def test_nonce_is_bound_to_its_source() -> None:
    auth = make_authenticator()
    nonce = auth.new_nonce("198.51.100.7", T0)
    assert verify(auth, answer(nonce)).outcome is Outcome.CHALLENGE
    unbound = make_authenticator(bind_nonce_to_source=False)
    nonce = unbound.new_nonce("198.51.100.7", T0)
    assert verify(unbound, answer(nonce)).outcome is Outcome.ACCEPTED


def test_nonce_from_the_future_is_not_ours() -> None:
    auth = make_authenticator()
    nonce = auth.new_nonce(SOURCE, T0 + 3600)
    assert verify(auth, answer(nonce), T0).outcome is Outcome.CHALLENGE


def test_any_replica_with_the_secret_verifies_and_rotation_keeps_old_nonces() -> None:
    directory = InMemoryDirectory([derive_credentials("1001", REALM, "right")])
    old = DigestAuthenticator(DigestPolicy(REALM), [SECRET], directory)
    new_secret = b"fedcba9876543210fedcba9876543210"
    rotated = DigestAuthenticator(DigestPolicy(REALM), [new_secret, SECRET], directory)
    stranger = DigestAuthenticator(DigestPolicy(REALM), [new_secret], directory)
    nonce = old.new_nonce(SOURCE, T0)
    assert verify(rotated, answer(nonce)).outcome is Outcome.ACCEPTED
    assert verify(stranger, answer(nonce)).outcome is Outcome.CHALLENGE


def test_opaque_is_issued_and_required_when_configured() -> None:
    auth = make_authenticator(opaque="plateau")
    (challenge, _) = auth.challenges(SOURCE, T0)
    assert ("opaque", "plateau", True) in challenge.params()
    nonce = challenge.nonce
    assert verify(auth, answer(nonce, opaque="plateau")).outcome is Outcome.ACCEPTED
    result = verify(auth, answer(nonce, nc="00000002", opaque="other"))
    assert (result.outcome, result.password_ok) == (Outcome.REJECTED, False)


def test_stale_challenges_say_so() -> None:
    auth = make_authenticator()
    assert all(c.stale for c in auth.challenges(SOURCE, T0, stale=True))
    assert ("stale", "true", False) in auth.challenges(SOURCE, T0, stale=True)[0].params()


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        DigestAuthenticator(DigestPolicy(REALM), [b"short"], InMemoryDirectory())


def test_unknown_user_is_hashed_against_a_dummy_ha1_of_the_right_length() -> None:
    auth = make_authenticator()
    sha = auth._ha1("nobody", Algorithm.SHA256)
    md5 = auth._ha1("nobody", Algorithm.MD5)
    assert (len(sha), len(md5)) == (64, 32)
    assert sha == auth._ha1("nobody", Algorithm.SHA256)  # stable per name
    assert auth._ha1("1001", Algorithm.MD5) == compute_ha1(Algorithm.MD5, "1001", REALM, "right")


# the nonce-count table -----------------------------------------------------------------


def test_nonce_counter_is_bounded_and_evicted_nonces_stay_used() -> None:
    counter = NonceCounter(max_nonces=3)
    for i in range(5):
        counter.accept(f"n{i}", issued_at=T0 + i, expires_at=T0 + 300, nc=1, now=T0 + i)
    assert len(counter) == 3
    assert not counter.is_fresh("n0", T0, 2)  # pushed out, but issued before the watermark
    assert counter.is_fresh("n4", T0 + 4, 2)
    assert counter.is_fresh("n9", T0 + 9, 1)  # a later nonce first seen here


def test_nonce_counter_forgets_expired_nonces() -> None:
    counter = NonceCounter()
    counter.accept("a", issued_at=T0, expires_at=T0 + 10, nc=1, now=T0)
    counter.accept("b", issued_at=T0 + 20, expires_at=T0 + 30, nc=1, now=T0 + 20)
    assert len(counter) == 1
