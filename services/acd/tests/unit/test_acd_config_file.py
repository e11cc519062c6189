"""Configuration files: every problem named by its line and field; the demo file is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from plateau_acd.adapters.config_file import ConfigFileError, parse_config_text, read_config_file
from plateau_acd.configure import demo_config, main

pytestmark = pytest.mark.unit

GOOD = """\
tenants:
  - id: mno
    name: MNO
    queues:
      - id: q-1
        name: One
    entry_points:
      - {dnis: "+242053000100", queue: q-1}
"""

BAD = """\
tenants:
  - id: mno
    name: MNO
    queues:
      - id: q-1
        name: One
        ring_timeout_s: 0
      - id: q-2
        name: Two
        overflow_queue: q-9
        max_wait_s: 30
    entry_points:
      - {dnis: "+242053000100", queue: q-3}
    agents:
      - id: a-1
        extension: "1001"
"""


def test_a_valid_file_parses() -> None:
    config = parse_config_text(GOOD, "good.yaml")
    assert config.tenants[0].entry_point_map() == {"+242053000100": "q-1"}


def test_each_problem_names_its_line_and_field() -> None:
    with pytest.raises(ConfigFileError) as raised:
        parse_config_text(BAD, "bad.yaml")
    found = {(p.line, p.path) for p in raised.value.problems}
    assert (7, "tenants[0].queues[0].ring_timeout_s") in found
    assert (15, "tenants[0].agents[0].name") in found  # missing: the agent's line
    text = str(raised.value)
    assert "bad.yaml:7: tenants[0].queues[0].ring_timeout_s:" in text


def test_cross_references_are_checked_with_their_lines() -> None:
    text = BAD.replace("        ring_timeout_s: 0\n", "").replace(
        '        extension: "1001"\n', '        name: A\n        extension: "1001"\n'
    )
    with pytest.raises(ConfigFileError) as raised:
        parse_config_text(text, "refs.yaml")
    lines = {p.path: p.line for p in raised.value.problems}
    assert lines == {
        "tenants[0].queues[1].overflow_queue": 9,
        "tenants[0].entry_points[0].queue": 12,
    }
    assert "unknown queue 'q-9'" in str(raised.value)


def test_yaml_syntax_errors_name_the_line() -> None:
    with pytest.raises(ConfigFileError) as raised:
        parse_config_text("tenants:\n  - id: [unclosed\n", "syntax.yaml")
    [problem] = raised.value.problems
    assert problem.line is not None and "not valid YAML" in problem.message


def test_a_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as raised:
        read_config_file(tmp_path / "nope.yaml")
    assert "cannot be read" in str(raised.value)


def test_the_shipped_demo_tenant_is_valid() -> None:
    [tenant] = demo_config().tenants
    assert tenant.id == "demo"
    assert tenant.entry_point_map()["+242053000100"] == "q-general"
    assert [a.extension for a in tenant.agents] == [str(n) for n in range(1001, 1007)]


def test_the_tool_refuses_an_invalid_file_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    assert main(["apply", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nothing applied" in err and "bad.yaml:7:" in err
