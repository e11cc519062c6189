"""Regenerate the committed artefacts derived from the contracts, or check they are current.

``python -m plateau_contracts.codegen`` writes:

* the Python gRPC stubs and their type stubs (``grpc_tools.protoc`` with mypy-protobuf)
  for every ``proto/**/*.proto``, into the ``plateau_contracts.grpc`` package: the proto
  package ``plateau.calls.v1`` becomes ``plateau_contracts.grpc.calls.v1``, so no
  top-level ``plateau`` package exists;
* ``docs/asyncapi.yaml`` and ``docs/events.md`` from the event catalogue.

``python -m plateau_contracts.codegen --check`` renders the same files into a temporary
directory, writes nothing, and exits 1 naming every committed file that differs, is
missing or should not exist (0 when all are current). Output is deterministic for a given
set of tool versions (grpcio-tools, mypy-protobuf, FastStream, pydantic).
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: Where things live, relative to the repository root.
PROTO_DIR = Path("proto")
PROTO_PACKAGE = "plateau"
GRPC_DIR = Path("libs/contracts/src/plateau_contracts/grpc")
GRPC_PACKAGE = "plateau_contracts.grpc"
ASYNCAPI_FILE = Path("docs/asyncapi.yaml")
EVENTS_FILE = Path("docs/events.md")

_INIT_DOC = '"""Generated gRPC stubs of proto/{path}; regenerate, do not edit."""\n'
_ROOT_INIT = (
    '"""gRPC stubs generated from proto/ by ``python -m plateau_contracts.codegen``.\n'
    "\n"
    "Import services and messages as ``plateau_contracts.grpc.<context>.v1.<file>_pb2`` and\n"
    "``..._pb2_grpc``. Nothing here is edited by hand.\n"
    '"""\n'
)
_IMPORT = re.compile(rf"^(from|import) {PROTO_PACKAGE}\.", re.MULTILINE)
_MODULE_NAME = re.compile(rf"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, '){PROTO_PACKAGE}\.")


class CodegenError(RuntimeError):
    """Generation could not run; the message says what is missing and how to fix it."""


def repo_root() -> Path:
    """The repository root, found from this file's location (never from the cwd)."""
    root = Path(__file__).resolve().parents[4]
    if not (root / PROTO_DIR / PROTO_PACKAGE).is_dir() or not (root / "pyproject.toml").is_file():
        raise CodegenError(
            f"no Plateau checkout around {Path(__file__).name}: codegen runs from a source "
            "checkout (pip install -e '.[dev]'), not from an installed wheel"
        )
    return root


def render(root: Path) -> dict[Path, bytes]:
    """Every generated file, by path relative to ``root``, without touching ``root``."""
    # Imported here so `--help` works even when the docs' dependencies are missing.
    from plateau_contracts.asyncapi import asyncapi_yaml, events_markdown

    files = _render_grpc(root)
    files[ASYNCAPI_FILE] = asyncapi_yaml().encode()
    files[EVENTS_FILE] = events_markdown().encode()
    return dict(sorted(files.items()))


def generate(root: Path) -> list[Path]:
    """Write every generated file under ``root``, removing stubs of deleted protos."""
    files = render(root)
    shutil.rmtree(root / GRPC_DIR, ignore_errors=True)
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return list(files)


def stale(root: Path) -> list[Path]:
    """Committed files that differ from a fresh rendering, are missing, or are left over."""
    files = render(root)
    problems = {
        relative
        for relative, content in files.items()
        if not (root / relative).is_file() or (root / relative).read_bytes() != content
    }
    grpc_dir = root / GRPC_DIR
    if grpc_dir.is_dir():
        problems.update(
            path.relative_to(root)
            for path in grpc_dir.rglob("*")
            if path.is_file()
            and "__pycache__" not in path.parts
            and path.relative_to(root) not in files
        )
    return sorted(problems)


def _render_grpc(root: Path) -> dict[Path, bytes]:
    protos = sorted(p.relative_to(root / PROTO_DIR).as_posix() for p in _proto_files(root))
    if not protos:
        raise CodegenError(f"no .proto files under {PROTO_DIR / PROTO_PACKAGE}")
    with tempfile.TemporaryDirectory(prefix="plateau-codegen-") as tmp:
        out = Path(tmp)
        _protoc(root, protos, out)
        files: dict[Path, bytes] = {GRPC_DIR / "__init__.py": _ROOT_INIT.encode()}
        package_root = out / PROTO_PACKAGE
        for path in sorted(package_root.rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(package_root)
            files[GRPC_DIR / relative] = _rewrite_imports(path.read_text()).encode()
            # Every directory on the way becomes a package, so the stubs import normally.
            for parent in relative.parents:
                if parent != Path("."):
                    init = _INIT_DOC.format(path=f"{PROTO_PACKAGE}/{parent.as_posix()}")
                    files[GRPC_DIR / parent / "__init__.py"] = init.encode()
    return files


def _proto_files(root: Path) -> list[Path]:
    return [p for p in (root / PROTO_DIR / PROTO_PACKAGE).rglob("*.proto") if p.is_file()]


def _protoc(root: Path, protos: Sequence[str], out: Path) -> None:
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={root / PROTO_DIR}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CodegenError(f"protoc failed:\n{result.stderr.strip()}")


def _plugin(name: str) -> str:
    # The plugins are console scripts of mypy-protobuf, installed next to this Python; PATH
    # may not include that directory when the venv's python is run directly.
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise CodegenError(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def _rewrite_imports(source: str) -> str:
    # protoc writes absolute imports of the proto package (`from plateau.calls.v1 import`);
    # the stubs live in plateau_contracts.grpc, so point them there. The serialized
    # descriptors keep the proto package name: that is the wire name and must not change.
    source = _IMPORT.sub(rf"\1 {GRPC_PACKAGE}.", source)
    return _MODULE_NAME.sub(rf"\1{GRPC_PACKAGE}.", source)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: regenerate, or with ``--check`` report stale files and exit 1."""
    parser = argparse.ArgumentParser(
        prog="python -m plateau_contracts.codegen",
        description="Regenerate gRPC stubs and event docs from proto/ and the event models.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and name each committed file that is not current",
    )
    args = parser.parse_args(argv)
    try:
        root = repo_root()
        if args.check:
            problems = stale(root)
            for path in problems:
                print(f"stale: {path.as_posix()}", file=sys.stderr)
            if problems:
                print(
                    "generated files are out of date: run `python -m plateau_contracts.codegen`"
                    " and commit the result",
                    file=sys.stderr,
                )
                return 1
            print("generated files are current")
            return 0
        written = generate(root)
    except CodegenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
