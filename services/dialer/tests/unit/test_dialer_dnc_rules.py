"""What a do-not-call request names and records: numbers read as a customer file's (E.164,
national form, the default region), any valid region, each once; a bad number refuses the
whole request with a message that says how to write it; a change records only what
changes."""

from __future__ import annotations

import pytest

from plateau_contracts.events.dialer import DoNotCallNumberAdded, DoNotCallNumberRemoved
from plateau_dialer.domain import do_not_call as dnc

pytestmark = pytest.mark.unit


def test_numbers_are_normalised_to_e164_in_the_default_region_each_once() -> None:
    numbers = dnc.read_numbers(
        [
            "06 612 34 56",
            "+242 06 612 34 56",
            "00242066123456",
            " 05 512 34 56 ",
            "+33 6 12 34 56 78",
        ],
        "CG",
    )
    assert numbers == ["+242066123456", "+242055123456", "+33612345678"]
    assert dnc.read_numbers(["06 12 34 56 78"], "FR") == ["+33612345678"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("appeler après 18h", "letters in the phone number"),
        ("=HYPERLINK(1)", "a formula"),
        ("12", "not a valid number"),
        ("", "the phone cell is empty"),
    ],
)
def test_a_bad_number_names_itself_and_how_to_write_one(text: str, why: str) -> None:
    with pytest.raises(dnc.BadNumberError) as refused:
        dnc.read_numbers(["06 612 34 56", text], "CG")
    message = str(refused.value)
    assert message.startswith(f"{text!r} is not a number that can be listed")
    assert why in message
    assert "+242066123456" in message  # an example of what is accepted


def test_a_request_with_no_number_is_refused() -> None:
    with pytest.raises(dnc.BadNumberError, match="at least one number"):
        dnc.read_numbers([], "CG")


def test_adding_records_only_numbers_not_listed_yet() -> None:
    change = dnc.add(
        ["+242066000001", "+242066000002", "+242066000001"],
        frozenset({"+242066000002"}),
        reason="opt-out",
        source="manual",
        added_by="sup-1",
    )
    assert change.events == [
        DoNotCallNumberAdded(
            number="+242066000001", reason="opt-out", source="manual", added_by="sup-1"
        )
    ]
    assert (change.changed, change.unchanged) == (["+242066000001"], ["+242066000002"])
    assert change.events[0].stream_id("mno") == "do-not-call-mno:+242066000001"


def test_removing_records_only_listed_numbers() -> None:
    change = dnc.remove(
        ["+242066000001", "+242066000002"],
        frozenset({"+242066000002"}),
        reason=None,
        removed_by="sup-1",
    )
    assert change.events == [
        DoNotCallNumberRemoved(number="+242066000002", reason=None, removed_by="sup-1")
    ]
    assert change.unchanged == ["+242066000001"]
