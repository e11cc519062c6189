"""What ``plateau backup`` takes from the home and which archives ``--keep`` removes."""

from __future__ import annotations

from pathlib import Path

import pytest

from plateau_cli.backup import _archive_path, _archived, _home_files, prune

pytestmark = pytest.mark.unit


def test_keep_removes_only_the_oldest_archives_it_made(tmp_path: Path) -> None:
    names = [f"plateau-2026112{d}T023000.000000Z.plateau-backup" for d in range(1, 6)]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an archive")
    (tmp_path / ".plateau-20261120T023000.000000Z.plateau-backup.partial").write_bytes(b"x")
    removed = prune(tmp_path, 2)
    assert sorted(p.name for p in removed) == names[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*names[3:], "notes.txt", ".plateau-20261120T023000.000000Z.plateau-backup.partial"]
    )
    assert prune(tmp_path, 5) == []


def test_an_output_directory_gets_a_dated_name(tmp_path: Path) -> None:
    target, directory = _archive_path(tmp_path)
    assert directory == tmp_path
    assert target.parent == tmp_path
    assert target.name.startswith("plateau-") and target.name.endswith(".plateau-backup")
    file_target, no_directory = _archive_path(tmp_path / "named.plateau-backup")
    assert file_target == tmp_path / "named.plateau-backup" and no_directory is None


def test_the_home_gives_its_configuration_not_its_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for name in (
        "access-users.json",
        "sip-extensions.json",
        "export-signing-key.pem",
        "tls/access-gateway.key",
        "pg/data/PG_VERSION",
        "pg/postgres-superuser",
        "logs/acd.log",
        "state.json",
        "up.lock",
        "secrets.json",
        ".access-users.json.123.tmp",
        "backups/plateau-20261121T023000.000000Z.plateau-backup",
    ):
        path = home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    found = sorted(p.relative_to(home).as_posix() for p in _home_files(home, None))
    assert found == [
        "access-users.json",
        "export-signing-key.pem",
        "sip-extensions.json",
        "tls/access-gateway.key",
    ]


def test_read_models_positions_and_sessions_stay_out() -> None:
    assert _archived("acd", "events")
    assert _archived("dialer", "contacts")
    assert _archived("access_gateway", "users")
    assert _archived("acd", "consumer_checkpoints")
    assert not _archived("acd", "relay_positions")
    assert not _archived("access_gateway", "sessions")
    assert not _archived("stats_projector", "intervals")
    assert not _archived("stats_projector", "consumer_checkpoints")
    assert _archived("stats_projector", "tenant_settings")


def test_gateway_replicas_call_owners_and_registrations_stay_out() -> None:
    assert _archived("sip_gateway", "allowlist_facts")
    assert not _archived("sip_gateway", "call_owners")
    assert not _archived("sip_gateway", "bindings")
