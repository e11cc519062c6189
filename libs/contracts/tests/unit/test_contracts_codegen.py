"""Code generation: the committed stubs and docs are current, and staleness is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plateau_contracts import codegen

pytestmark = pytest.mark.unit

ROOT = codegen.repo_root()
CALL_CONTROL = codegen.PROTO_DIR / "plateau/calls/v1/call_control.proto"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of just what codegen reads and writes, to be spoiled freely."""
    for relative in (codegen.PROTO_DIR, codegen.GRPC_DIR):
        shutil.copytree(
            ROOT / relative, tmp_path / relative, ignore=shutil.ignore_patterns("__pycache__")
        )
    for relative in (codegen.ASYNCAPI_FILE, codegen.EVENTS_FILE):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, tmp_path / relative)
    return tmp_path


def test_check_passes_on_the_committed_tree(tmp_path: Path) -> None:
    # Run as a user would, from an unrelated directory: the root is found from the module.
    result = subprocess.run(
        [sys.executable, "-m", "plateau_contracts.codegen", "--check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "current" in result.stdout


def test_a_fresh_copy_is_current(checkout: Path) -> None:
    assert codegen.stale(checkout) == []


def test_a_changed_proto_makes_its_stubs_stale(checkout: Path) -> None:
    proto = checkout / CALL_CONTROL
    proto.write_text(
        proto.read_text().replace(
            "message HangupResponse {}", "message HangupResponse {\n  // When.\n  int64 at = 1;\n}"
        )
    )
    stale = {p.as_posix() for p in codegen.stale(checkout)}
    grpc = codegen.GRPC_DIR.as_posix()
    assert f"{grpc}/calls/v1/call_control_pb2.py" in stale
    assert f"{grpc}/calls/v1/call_control_pb2.pyi" in stale
    assert not any("agent_desk" in p or "campaigns" in p for p in stale)
    assert codegen.ASYNCAPI_FILE.as_posix() not in stale


def test_edited_docs_missing_stubs_and_leftovers_are_all_named(checkout: Path) -> None:
    (checkout / codegen.EVENTS_FILE).write_text("# hand-edited\n")
    (checkout / codegen.GRPC_DIR / "agents/v1/agent_desk_pb2_grpc.py").unlink()
    leftover = checkout / codegen.GRPC_DIR / "old/v1/gone_pb2.py"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("")
    assert codegen.stale(checkout) == sorted(
        [
            codegen.EVENTS_FILE,
            codegen.GRPC_DIR / "agents/v1/agent_desk_pb2_grpc.py",
            codegen.GRPC_DIR / "old/v1/gone_pb2.py",
        ]
    )


def test_cli_check_exits_1_naming_each_stale_file(
    checkout: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (checkout / codegen.ASYNCAPI_FILE).write_text("asyncapi: 0.0.0\n")
    monkeypatch.setattr(codegen, "repo_root", lambda: checkout)
    assert codegen.main(["--check"]) == 1
    assert "stale: docs/asyncapi.yaml" in capsys.readouterr().err


def test_generate_repairs_a_stale_copy_and_is_deterministic(checkout: Path) -> None:
    (checkout / codegen.EVENTS_FILE).write_text("# hand-edited\n")
    leftover = checkout / codegen.GRPC_DIR / "old/v1/gone_pb2.py"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("")
    written = codegen.generate(checkout)
    assert codegen.EVENTS_FILE in written
    assert not leftover.exists()
    assert codegen.stale(checkout) == []
    first = {p: (checkout / p).read_bytes() for p in written}
    codegen.generate(checkout)
    assert {p: (checkout / p).read_bytes() for p in written} == first


def test_stubs_import_from_the_contracts_package_only() -> None:
    from plateau_contracts.grpc.calls.v1 import call_control_pb2, call_control_pb2_grpc

    request = call_control_pb2.OriginateRequest(number="+242066123456", campaign_id="c1")
    assert call_control_pb2.OriginateRequest.FromString(request.SerializeToString()) == request
    assert hasattr(call_control_pb2_grpc, "CallControlStub")
    # The wire name keeps the proto package; the Python module lives under the contracts.
    assert request.DESCRIPTOR.full_name == "plateau.calls.v1.OriginateRequest"
    assert type(request).__module__ == "plateau_contracts.grpc.calls.v1.call_control_pb2"
    generated = (ROOT / codegen.GRPC_DIR).rglob("*.py*")
    offenders = [
        p.name
        for p in generated
        if any(
            line.startswith(("from plateau.", "import plateau."))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []
    assert not (ROOT / "libs/contracts/src/plateau").exists()
