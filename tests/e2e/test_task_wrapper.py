"""The ``./task`` bootstrap wrapper, run on copies with stand-in interpreters: it installs
only when pyproject.toml changed, hands its arguments to go-task, and says exactly what to
do when Python is too old or Debian's venv module is missing. It never touches the real
.venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WRAPPER = Path(__file__).resolve().parents[2] / "task"
#: What the wrapper may call besides bash builtins, for a PATH that holds nothing else.
UTILITIES = ("dirname", "cat", "grep", "head", "mktemp", "rm", "id", "mkdir")


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def _checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(WRAPPER, repo / "task")
    (repo / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    return repo


def _run(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(repo / "task"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _only_path(tmp_path: Path) -> Path:
    """A bin directory with the utilities the wrapper needs, and no Python."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in UTILITIES:
        real = shutil.which(name)
        assert real, f"{name} is not installed"
        (bin_dir / name).symlink_to(real)
    return bin_dir


def test_installs_when_pyproject_changes_and_passes_arguments(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    log = tmp_path / "calls.log"
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    # Stands in for the venv's python: records pip installs (which bring go-task along),
    # runs anything else with the real interpreter.
    _script(
        venv_bin / "python",
        f"""if [ "$1" = -m ] && [ "$2" = pip ]; then
  echo "pip ${{*:3}} (in $PWD)" >> "{log}"
  printf '#!/bin/bash\\necho "task $* (in $PWD)" >> "{log}"\\n' > "{venv_bin}/task"
  chmod +x "{venv_bin}/task"
  exit 0
fi
exec "{sys.executable}" "$@"
""",
    )
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PLATEAU_VENV": str(venv_bin.parent),
    }

    first = _run(repo, "up", "--", "--no-services", env=env)
    assert first.returncode == 0, first.stderr
    assert log.read_text().splitlines() == [
        f"pip install --disable-pip-version-check -q -e .[dev] (in {repo})",
        f"task up -- --no-services (in {repo})",
    ]
    assert "installing Plateau" in first.stderr

    second = _run(repo, "test", env=env)
    assert second.returncode == 0, second.stderr
    assert log.read_text().splitlines()[2:] == [f"task test (in {repo})"]
    assert "installing" not in second.stderr

    with (repo / "pyproject.toml").open("a") as handle:
        handle.write('version = "2"\n')
    third = _run(repo, "--list", env=env)
    assert third.returncode == 0, third.stderr
    assert [line.split()[0] for line in log.read_text().splitlines()[3:]] == ["pip", "task"]


def test_too_old_python_is_explained(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    bin_dir = _only_path(tmp_path)
    for name in ("python3", "python3.11", "python3.12", "python3.13", "python3.14"):
        _script(
            bin_dir / name,
            'if [ "$1" = --version ]; then echo "Python 3.9.2"; exit 0; fi\nexit 1\n',
        )

    result = _run(repo, "up", env={"PATH": str(bin_dir)})

    assert result.returncode == 1
    assert "needs Python 3.11 or newer" in result.stderr
    assert "python3 is Python 3.9.2" in result.stderr
    assert not (repo / ".venv").exists()


def test_missing_venv_module_tells_a_non_root_user_the_command(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    bin_dir = _only_path(tmp_path)
    (bin_dir / "id").unlink()
    _script(bin_dir / "id", "echo 1000\n")
    # Debian's python3 without python3-venv: venv leaves a half-made directory and explains.
    _script(
        bin_dir / "python3",
        """if [ "$1" = -c ]; then exit 0; fi
if [ "$1" = --version ]; then echo "Python 3.11.2"; exit 0; fi
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin"
  echo "The virtual environment was not created successfully because ensurepip is not"
  echo "available.  On Debian/Ubuntu systems, you need to install the python3-venv"
  echo "package using the following command."
  echo ""
  echo "    apt install python3.11-venv"
  exit 1
fi
exit 2
""",
    )

    result = _run(repo, "test", env={"PATH": str(bin_dir)})

    assert result.returncode == 1
    assert "sudo apt-get install -y python3-venv python3.11-venv" in result.stderr
    assert not (repo / ".venv").exists(), "a half-made venv must not be left behind"
