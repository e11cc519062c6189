"""``plateau demo`` as a newcomer runs it: on a fresh home, the supervision API (as the demo
client, through an API token) shows calls offered and answered and agents in several
states within a minute of the traffic's start; SIGTERM then stops everything, exit 0."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from plateau_e2e import (
    CLI,
    PlateauUp,
    cli_env,
    make_home,
    processes_referencing,
    run_cli,
    wait_for_https,
)

from plateau_runtime.embedded import free_port

pytestmark = pytest.mark.e2e

MOVES_WITHIN_S = 60.0


class PlateauDemo(PlateauUp):
    """A ``plateau demo`` child process, read as ``PlateauUp`` reads ``plateau up``."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.home = Path(env["PLATEAU_HOME"])
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [*CLI, "demo", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def _trunks(path: Path, carrier_port: int) -> Path:
    """The demo trunk, with its carrier on a free port (5070 may be taken on a test host)."""
    path.write_text(
        json.dumps(
            {
                "trunks": [
                    {
                        "name": "demo",
                        "tenant": "demo",
                        "source_networks": ["127.0.0.1/32"],
                        "outbound": [{"host": "127.0.0.1", "port": carrier_port}],
                        "entry_points": {"+242053000100": "sales"},
                        "capacity": {"kind": "bandwidth", "bandwidth_kbps": 4000},
                        "options_interval_s": 0,
                    }
                ]
            }
        )
    )
    return path


def _demo_client_token(home: Path, base_url: str, verify: ssl.SSLContext) -> str:
    """A read-only API token of the demo client (``demo.supervisor``), made by the operator
    admin: the supervisor's own login would first enrol a TOTP authenticator."""
    users = {
        u["username"]: u for u in json.loads((home / "access-users.json").read_text())["users"]
    }
    with httpx.Client(base_url=base_url, verify=verify, timeout=30) as admin:
        login = admin.post(
            "/api/v1/auth/login",
            json={"username": "demo.admin", "password": users["demo.admin"]["password"]},
        )
        assert login.status_code == 200, login.text
        csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
        listed = admin.get("/api/v1/admin/users", params={"tenant": "demo"}).json()
        supervisor = next(u for u in listed if u["username"] == "demo.supervisor")
        made = admin.post(
            f"/api/v1/admin/users/{supervisor['user_id']}/tokens",
            json={"name": "e2e-demo", "days": 1},
            headers=csrf,
        )
        assert made.status_code == 201, made.text
        return str(made.json()["token"])


def _wallboard(client: httpx.Client) -> dict[str, Any]:
    queues = client.get("/api/v1/queues").json()
    agents = client.get("/api/v1/agents").json()
    campaigns = client.get("/api/v1/campaigns").json()
    return {
        "offered": sum(q["today"]["offered"] for q in queues),
        "answered": sum(q["today"]["answered"] for q in queues),
        "states": sorted({a["state"] for a in agents} - {"logged_out"}),
        "campaigns": {c["campaign_id"]: c["status"] for c in campaigns},
    }


def test_the_demo_moves_the_wallboard_within_a_minute_and_stops_cleanly(tmp_path: Path) -> None:
    home = make_home()
    env = cli_env(home, PLATEAU_SIP_TRUNKS_FILE=str(_trunks(tmp_path / "t.json", free_port())))
    demo = PlateauDemo(env, "--seed", "8")
    try:
        assert demo.wait_for("Plateau is up"), demo.output()[-6000:]
        assert demo.wait_for("simulated traffic starts now", timeout=10), demo.output()[-3000:]
        began = time.monotonic()
        port = env["PLATEAU_HTTPS_PORT"]
        assert demo.wait_for("log in as the demo client `demo.supervisor`", timeout=1)
        assert f"https://127.0.0.1:{port}/" in demo.output()
        wait_for_https(port)
        base_url = f"https://127.0.0.1:{port}"
        verify = ssl.create_default_context(cafile=home / "tls" / "access-gateway.crt")
        token = _demo_client_token(home, base_url, verify)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, verify=verify, headers=headers, timeout=30) as client:
            while True:
                board = _wallboard(client)
                if (
                    board["offered"] > 0
                    and board["answered"] > 0
                    and len(board["states"]) >= 2
                    and board["campaigns"].get("demo-renewals") == "running"
                ):
                    print(f"wallboard moved {time.monotonic() - began:.1f} s after the start")
                    break
                waited = time.monotonic() - began
                assert waited < MOVES_WITHIN_S, (
                    f"after {waited:.0f} s: {board}\n" + (demo.output()[-4000:])
                )
                time.sleep(1)

        second = run_cli("demo", env=env)
        assert second.returncode == 1, second.stdout + second.stderr
        assert "Plateau is already running" in second.stderr

        family = demo.descendants()
        assert len(family) >= 7  # PostgreSQL, the broker and the five services at least
        assert demo.stop() == 0, demo.output()[-4000:]
        _, alive = psutil.wait_procs(family, timeout=5)
        assert alive == [], alive
        assert processes_referencing(home) == []
        output = demo.output()
        assert "stopping the traffic" in output and "Plateau stopped" in output
        assert "Traceback" not in output
    finally:
        if demo.process.poll() is None:
            demo.kill_everything()
        shutil.rmtree(home.parent, ignore_errors=True)


def test_the_demo_refuses_to_start_when_its_carrier_port_is_taken(tmp_path: Path) -> None:
    home = make_home()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        trunks = _trunks(tmp_path / "t.json", taken.getsockname()[1])
        env = cli_env(home, PLATEAU_SIP_TRUNKS_FILE=str(trunks))
        done = run_cli("demo", env=env)
    try:
        assert done.returncode == 2, done.stdout + done.stderr
        assert "demo's carrier must listen there" in done.stderr
        assert not home.exists()  # nothing was started or written
        refused = run_cli("demo", "--agents", "11", env=env)
        assert refused.returncode == 2 and "1001-1010" in refused.stderr
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
