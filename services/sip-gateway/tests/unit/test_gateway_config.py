"""The gateway's configuration: demo defaults, generated passwords, digest algorithms."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from plateau_runtime.errors import ConfigurationError
from plateau_sip_gateway.config import DEMO_EXTENSIONS, load_passwords, load_trunks
from plateau_sip_gateway.domain.digest import Algorithm
from plateau_sip_gateway.domain.trunks import InboundAccepted, TrunkDirectory
from plateau_sip_gateway.settings import GatewaySettings, digest_algorithms

pytestmark = pytest.mark.unit


def test_demo_passwords_are_generated_once_private_and_kept(tmp_path: Path) -> None:
    first = load_passwords(None, tmp_path)
    assert sorted(first) == sorted(DEMO_EXTENSIONS) and len(set(first.values())) == 10
    path = tmp_path / "sip-extensions.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_passwords(None, tmp_path) == first


def test_the_demo_trunk_accepts_its_number_from_loopback_only() -> None:
    trunks = TrunkDirectory(load_trunks(None, "demo"))
    assert isinstance(trunks.classify("127.0.0.1", "053000100"), InboundAccepted)
    assert not isinstance(trunks.classify("127.0.0.2", "053000100"), InboundAccepted)
    assert trunks.get("demo") is not None and trunks.get("demo").max_calls == 45  # type: ignore[union-attr]


def test_a_broken_extensions_file_says_what_to_write(tmp_path: Path) -> None:
    path = tmp_path / "ext.json"
    path.write_text('["1001"]')
    with pytest.raises(ConfigurationError, match="extension -> password"):
        load_passwords(path, tmp_path)


def test_digest_algorithms_default_to_md5_for_baresip() -> None:
    assert digest_algorithms(GatewaySettings().sip_digest_algorithms) == (Algorithm.MD5,)
    assert digest_algorithms("SHA-256, MD5") == (Algorithm.SHA256, Algorithm.MD5)
    with pytest.raises(ValueError, match="SHA-1"):
        digest_algorithms("SHA-1")
