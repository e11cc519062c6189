"""The ``plateau`` command as an operator uses it: ``up`` brings the embedded default up and
keeps it up, ``status`` tells the truth, a second ``up`` is refused, a stop leaves nothing
behind, and bad input gets one clear line, never a traceback, and never touches data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import grpc
import psutil
import pytest
from plateau_e2e import (
    PlateauUp,
    cli_env,
    make_home,
    processes_referencing,
    run_cli,
    snapshot,
)

from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as desk
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2_grpc as desk_grpc
from plateau_runtime.embedded import free_port
from plateau_runtime.services import SERVICES

pytestmark = pytest.mark.e2e


def _state(home: Path) -> dict:
    return json.loads((home / "state.json").read_text())


def _assert_one_clear_line(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# -- the running platform (one for the tests below, stopped by the last of them) -------------


@pytest.fixture(scope="module")
def platform() -> Iterator[PlateauUp]:
    home = make_home()
    up = PlateauUp(cli_env(home))
    try:
        if not up.wait_for("Plateau is up"):
            pytest.fail(
                "plateau up did not report 'Plateau is up' in time:\n" + up.output()[-6000:]
            )
        yield up
    finally:
        if up.process.poll() is None:
            up.kill_everything()
        shutil.rmtree(home.parent, ignore_errors=True)


def test_up_brings_everything_up_and_status_says_so(platform: PlateauUp) -> None:
    env = platform.env
    result = run_cli("status", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows["postgres"] == "healthy"
    assert rows["broker"] == "healthy"
    for spec in SERVICES:
        assert rows[spec.name] == "SERVING"

    as_json = run_cli("status", "--json", env=env)
    assert as_json.returncode == 0
    assert {row["part"] for row in json.loads(as_json.stdout) if row["healthy"]} == {
        "postgres",
        "broker",
        *(s.name for s in SERVICES),
    }

    state = _state(platform.home)
    assert state["supervisor"]["pid"] == platform.pid
    port = state["postgres"]["port"]
    assert state["postgres"]["dsn"] == f"postgresql://postgres@127.0.0.1:{port}/plateau"
    assert oct((platform.home / "secrets.json").stat().st_mode & 0o777) == "0o600"
    for spec in SERVICES:
        log = platform.home / "logs" / f"{spec.name}.log"
        assert log.stat().st_size > 0, f"{log} is empty"
        assert f"{spec.name} " in platform.output()  # its lines, prefixed by its name


def test_the_demo_tenant_is_configured_and_config_apply_versions_it(
    platform: PlateauUp, tmp_path: Path
) -> None:
    env = platform.env
    assert "configuration: tenant demo: configuration version 1 applied" in platform.output()
    metadata = (("x-plateau-tenant", "demo"),)
    with grpc.insecure_channel(f"127.0.0.1:{env['PLATEAU_ACD_GRPC_PORT']}") as channel:
        stub = desk_grpc.AgentDeskStub(channel)
        queues = stub.QueueStatus(desk.QueueStatusRequest(), metadata=metadata, timeout=10)
        assert [q.queue_id for q in queues.queues] == ["q-backup", "q-billing", "q-general"]

    demo = resources.files("plateau_acd").joinpath("demo_tenant.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(demo.replace("ring_timeout_s: 15", "ring_timeout_s: 0", 1))
    refused = run_cli("config", "apply", str(bad), env=env)
    assert refused.returncode == 2
    line = 1 + demo.splitlines().index("        ring_timeout_s: 15")
    assert f"bad.yaml:{line}: tenants[0].queues[0].ring_timeout_s:" in refused.stderr

    good = tmp_path / "good.yaml"
    good.write_text(demo.replace("wrap_up_s: 10", "wrap_up_s: 20", 1))
    applied = run_cli("config", "apply", str(good), env=env)
    assert applied.returncode == 0, applied.stderr
    assert "tenant demo: configuration version 2 applied" in applied.stdout
    again = run_cli("config", "apply", str(good), env=env)
    assert "tenant demo: up to date (configuration version 2)" in again.stdout


def test_second_up_is_refused_and_changes_nothing(platform: PlateauUp) -> None:
    home = platform.home
    watched = ["state.json", "secrets.json", "up.lock"]
    before = {
        name: ((home / name).read_bytes(), (home / name).stat().st_mtime_ns) for name in watched
    }
    entries_before = sorted(p.name for p in home.iterdir())

    result = run_cli("up", env=platform.env, timeout=30)

    assert result.returncode == 1, result.stdout + result.stderr
    expected = (
        f"Plateau is already running (pid {platform.pid}) — use `plateau status`, "
        f"or stop it with Ctrl-C / kill {platform.pid}"
    )
    assert expected in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    after = {
        name: ((home / name).read_bytes(), (home / name).stat().st_mtime_ns) for name in watched
    }
    assert after == before
    assert sorted(p.name for p in home.iterdir()) == entries_before
    assert platform.process.poll() is None


def test_a_killed_service_is_restarted(platform: PlateauUp) -> None:
    victim = "acd"
    old_pid = _state(platform.home)["services"][victim]["pid"]
    os.kill(old_pid, signal.SIGKILL)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        entry = _state(platform.home)["services"][victim]
        if entry["pid"] not in (None, old_pid) and entry["serving"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{victim} was not restarted:\n" + platform.output()[-4000:])

    assert entry["restarts"] >= 1
    assert psutil.pid_exists(entry["pid"])
    result = run_cli("status", env=platform.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert platform.wait_for(f"{victim} exited unexpectedly", timeout=1)
    assert platform.wait_for(f"{victim} restarted", timeout=1)


def test_sigterm_stops_everything_and_leaves_no_process(platform: PlateauUp) -> None:
    descendants = platform.descendants()
    assert len(descendants) >= 2 + len(SERVICES)

    code = platform.stop(signal.SIGTERM)

    assert code == 0, platform.output()[-4000:]
    assert platform.wait_for("Plateau stopped", timeout=1)
    survivors = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    assert processes_referencing(platform.home) == []
    assert _state(platform.home)["stopped_at"]

    result = run_cli("status", env=platform.env)
    assert result.returncode == 3
    assert "Plateau is not running — start it with ./task up" in result.stdout


# -- stopping while still starting --------------------------------------------------------


def test_sigterm_while_starting_leaves_no_process(home: Path) -> None:
    up = PlateauUp(cli_env(home))
    try:
        assert up.wait_for("starting PostgreSQL", timeout=30), up.output()
        time.sleep(0.5)  # inside initdb / PostgreSQL's start
        descendants = up.descendants()
        code = up.stop(signal.SIGTERM)
        assert code == 0, up.output()
        assert "Traceback" not in up.output()
        late = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert late == []
        assert processes_referencing(home) == []
    finally:
        if up.process.poll() is None:
            up.kill_everything()


# -- bad input: one clear line, exit 2, nothing touched --------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PLATEAU_POSTGRES_PORT", "notaport"),
        ("PLATEAU_KAFKA_PORT", "70000"),
        ("PLATEAU_ACD_GRPC_PORT", "-1"),
        ("PLATEAU_LOG_LEVEL", "chatty"),
    ],
)
def test_a_bad_setting_is_named(home: Path, variable: str, value: str) -> None:
    result = run_cli("up", env=cli_env(home, **{variable: value}))

    assert result.returncode == 2, result.stdout + result.stderr
    _assert_one_clear_line(result.stderr, variable, value)
    assert not (home / "pg").exists()


def test_a_taken_postgres_port_is_reported(home: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_cli("up", env=cli_env(home, PLATEAU_POSTGRES_PORT=str(port)))

    assert result.returncode == 2, result.stdout + result.stderr
    _assert_one_clear_line(result.stderr, str(port), "already in use", "PLATEAU_POSTGRES_PORT")
    assert not (home / "pg").exists()


def test_a_taken_service_port_is_reported(home: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]  # bound but not listening is taken too
        result = run_cli("up", env=cli_env(home, PLATEAU_DIALER_GRPC_PORT=str(port)))

    assert result.returncode == 2, result.stdout + result.stderr
    _assert_one_clear_line(result.stderr, str(port), "PLATEAU_DIALER_GRPC_PORT")


def test_a_data_directory_without_a_cluster_is_left_alone(home: Path) -> None:
    data = home / "pg" / "data"
    data.mkdir(parents=True)
    (data / "notes.txt").write_text("precious, not PostgreSQL\n")
    (data / "base").mkdir()
    (data / "base" / "1").write_bytes(b"\x00\x01binary")
    before = snapshot(data)

    result = run_cli("up", env=cli_env(home))

    assert result.returncode == 2, result.stdout + result.stderr
    _assert_one_clear_line(result.stderr, str(data), "PG_VERSION")
    assert snapshot(data) == before


def test_a_broken_cluster_is_left_alone(home: Path) -> None:
    data = home / "pg" / "data"
    data.mkdir(parents=True, mode=0o700)
    (data / "PG_VERSION").write_text("18\n")
    (data / "postgresql.conf").write_text("# a cluster whose pg_control was lost\n")
    before = snapshot(data)

    result = run_cli("up", env=cli_env(home))

    assert result.returncode == 2, result.stdout + result.stderr
    _assert_one_clear_line(result.stderr, str(data), "damaged")
    assert snapshot(data) == before
    assert processes_referencing(home) == []


def test_migrate_against_an_unreachable_database(home: Path) -> None:
    port = free_port()
    url = f"postgresql://x:y@127.0.0.1:{port}/db"

    result = run_cli("migrate", "--admin-url", url, env=cli_env(home))

    assert result.returncode == 2, result.stdout + result.stderr
    _assert_one_clear_line(result.stderr, f"127.0.0.1:{port}", "cannot be reached")
    assert ":y@" not in result.stderr


def test_migrate_and_status_when_nothing_runs(home: Path) -> None:
    status = run_cli("status", env=cli_env(home))
    assert status.returncode == 3
    assert status.stdout.strip() == "Plateau is not running — start it with ./task up"

    migrate = run_cli("migrate", env=cli_env(home))
    assert migrate.returncode == 3
    assert "Plateau is not running" in migrate.stdout


def test_an_unknown_service_is_named(home: Path) -> None:
    result = run_cli(
        "migrate", "--service", "acme", "--admin-url", "postgresql://x@h/d", env=cli_env(home)
    )

    assert result.returncode == 2
    _assert_one_clear_line(result.stderr, "acme", "acd")


def test_status_while_up_is_still_starting(home: Path) -> None:
    # A process that holds the lock as `plateau up` does before it has written its state.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from plateau_cli.home import Home; "
            "lock = Home(Path(sys.argv[1])).acquire_lock(); print('locked', flush=True); "
            "time.sleep(60)",
            str(home),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = run_cli("status", env=cli_env(home))
        assert result.returncode == 1
        assert f"Plateau is starting (pid {holder.pid})" in result.stdout
    finally:
        holder.kill()
        holder.wait()


def test_an_unexpected_error_gives_one_line_and_a_traceback_file(home: Path) -> None:
    crash = (
        "import sys, plateau_cli.main as cli\n"
        "def boom(args):\n"
        "    raise RuntimeError('kaboom')\n"
        "cli.cmd_status = boom\n"
        "sys.exit(cli.main(['status']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", crash],
        env=cli_env(home),
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    _assert_one_clear_line(result.stderr, "unexpected error: RuntimeError: kaboom")
    log = home / "logs" / "plateau-crash.log"
    assert str(log) in result.stderr
    assert "Traceback" in log.read_text() and "kaboom" in log.read_text()
