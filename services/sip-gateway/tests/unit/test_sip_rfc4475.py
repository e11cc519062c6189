"""Every RFC 4475 torture message is a test case (expectations in rfc4475_expectations)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rfc4475_expectations import EXPECTATIONS, EXTRA_FILES, Fails, Parses

from plateau_sip_gateway.sip import (
    SipParseError,
    SipRequest,
    UasPolicy,
    check_request,
    parse,
)

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[4]
TORTURE_DIR = REPO_ROOT.parent / "shared" / "testdata" / "sip" / "rfc4475"
ALL_CASES = {**EXPECTATIONS, **EXTRA_FILES}


def _torture_dir() -> Path:
    if not (TORTURE_DIR / "map.txt").is_file():
        pytest.fail(
            f"RFC 4475 test messages not found in {TORTURE_DIR}: they live in "
            "../shared/testdata/sip/rfc4475 next to the repository checkout"
        )
    return TORTURE_DIR


def _message(name: str) -> bytes:
    return (_torture_dir() / f"{name}.dat").read_bytes()


def test_the_torture_directory_holds_every_rfc_message_and_nothing_unexpected() -> None:
    directory = _torture_dir()
    mapping = dict(
        entry.split(":") for entry in (directory / "map.txt").read_text().split() if entry
    )
    assert len(mapping) == 49
    files = {p.stem for p in directory.glob("*.dat")}
    assert set(mapping.values()) <= files, "map.txt names files that are missing"
    assert files - set(mapping.values()) == set(EXTRA_FILES), "unexpected extra .dat files"
    assert len(files) == 49 + len(EXTRA_FILES)
    # the table covers each file once, under the section map.txt gives it
    assert set(EXPECTATIONS) == set(mapping.values())
    for section, name in mapping.items():
        assert EXPECTATIONS[name].section == section


@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_torture_message(name: str) -> None:
    expected = ALL_CASES[name]
    data = _message(name)
    if isinstance(expected, Fails):
        with pytest.raises(SipParseError) as caught:
            parse(data)
        error = caught.value
        assert (error.status, error.can_respond) == (expected.status, expected.can_respond), (
            error.reason
        )
        assert expected.reason.lower() in error.reason.lower()
        if error.can_respond:
            _check_error_response(error, data)
        else:
            with pytest.raises(ValueError, match="no response"):
                error.create_response()
        return
    assert isinstance(expected, Parses)
    message = parse(data)
    for label, getter, value in expected.fields:
        assert getter(message) == value, label
    if isinstance(message, SipRequest):
        rejection = check_request(message)
        assert (rejection.status if rejection else None) == expected.uas, rejection
    else:
        assert expected.uas is None


@pytest.mark.parametrize(
    "name", sorted(n for n, e in EXPECTATIONS.items() if isinstance(e, Parses))
)
def test_valid_torture_message_round_trips(name: str) -> None:
    message = parse(_message(name))
    encoded = message.encode()
    again = parse(encoded)
    assert again == message
    assert again.encode() == encoded
    assert f"\r\nContent-Length: {len(message.body)}\r\n\r\n".encode() in encoded


def _check_error_response(error: SipParseError, data: bytes) -> None:
    """The error response copies the request's headers as received (malformed ones too)."""
    response = error.create_response(to_tag="gw1")
    assert response.status == error.status
    assert response.encode().startswith(f"SIP/2.0 {error.status} ".encode())
    raw_top_via = data.split(b"\r\nVia", 1)[1].split(b":", 1)[1].split(b"\r\n")[0].strip()
    assert response.headers.get_all("Via")[0] in raw_top_via.decode()
    assert response.headers.get("CSeq") is not None
    to = response.headers.get("To")
    if to is not None:
        assert "tag=" in to


def test_insufficient_headers_still_get_a_400_that_names_what_is_missing() -> None:
    with pytest.raises(SipParseError) as caught:
        parse(_message("insuf"))
    response = caught.value.create_response()
    assert response.status == 400
    assert response.headers.get("CSeq") == "193942 INVITE"
    assert response.headers.get("Call-ID") is None


def test_bad_extension_lists_the_unsupported_option_tags() -> None:
    request = parse(_message("bext01"))
    assert isinstance(request, SipRequest)
    uas = check_request(request)
    assert uas is not None
    response = uas.create_response(request, to_tag="t")
    assert response.status == 420
    assert response.unsupported == ("nothingSupportsThis", "nothingSupportsThisEither")
    proxy = check_request(request, UasPolicy(proxy=True))
    assert proxy is not None
    assert [v for k, v in proxy.headers] == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]


def test_unknown_content_type_is_answered_with_the_accepted_ones() -> None:
    request = parse(_message("invut"))
    assert isinstance(request, SipRequest)
    rejection = check_request(request)
    assert rejection is not None
    assert rejection.create_response(request).headers.get("Accept") == "application/sdp"


def test_zero_max_forwards_is_for_a_proxy_to_refuse_with_483() -> None:
    request = parse(_message("zeromf"))
    assert isinstance(request, SipRequest)
    assert check_request(request) is None
    rejection = check_request(request, UasPolicy(proxy=True))
    assert rejection is not None and rejection.status == 483
    with pytest.raises(ValueError, match="483"):
        request.with_decremented_max_forwards()


def test_a_novel_scheme_is_served_when_the_policy_knows_it() -> None:
    request = parse(_message("novelsc"))
    assert isinstance(request, SipRequest)
    assert check_request(request, UasPolicy(uri_schemes=frozenset({"soap.beep"}))) is None
