"""The access gateway in the embedded default: ``plateau up`` serves it over HTTPS with a
generated certificate and demo users, and ``plateau users`` manages accounts."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from plateau_e2e import CLI, PlateauUp, cli_env, make_home, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform() -> Iterator[PlateauUp]:
    home = make_home()
    up = PlateauUp(cli_env(home))
    try:
        if not up.wait_for("Plateau is up"):
            pytest.fail("plateau up did not come up:\n" + up.output()[-6000:])
        yield up
    finally:
        if up.process.poll() is None:
            up.stop()
        if up.process.poll() is None:
            up.kill_everything()
        shutil.rmtree(home.parent, ignore_errors=True)


def _client(platform: PlateauUp) -> httpx.Client:
    cert = platform.home / "tls" / "access-gateway.crt"
    port = platform.env["PLATEAU_HTTPS_PORT"]
    return httpx.Client(
        base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=cert)
    )


def _login(platform: PlateauUp, username: str, password: str) -> httpx.Response:
    with _client(platform) as client:
        for _ in range(100):  # the gateway binds its port just after reporting SERVING
            try:
                return client.post(
                    "/api/v1/auth/login", json={"username": username, "password": password}
                )
            except httpx.ConnectError:
                time.sleep(0.1)
    raise AssertionError("the access gateway never accepted a connection")


def test_up_serves_https_with_demo_users_whose_passwords_stay_private(
    platform: PlateauUp,
) -> None:
    port = platform.env["PLATEAU_HTTPS_PORT"]
    # Printed just after "Plateau is up": wait for the line rather than race its reader.
    assert platform.wait_for(f"access gateway: https://127.0.0.1:{port}/", timeout=10)
    credentials = platform.home / "access-users.json"
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert (platform.home / "tls" / "access-gateway.key").stat().st_mode & 0o777 == 0o600
    users = {u["username"]: u for u in json.loads(credentials.read_text())["users"]}
    assert set(users) == {"demo.admin", "demo.supervisor"}
    assert all(u["password"] not in platform.output() for u in users.values())

    admin = _login(platform, "demo.admin", users["demo.admin"]["password"])
    assert admin.status_code == 200, admin.text
    assert admin.json()["stage"] == "active"
    supervisor = _login(platform, "demo.supervisor", users["demo.supervisor"]["password"])
    assert supervisor.json()["stage"] == "enrol_totp"  # client users must enrol TOTP


def test_users_add_list_and_unlock(platform: PlateauUp) -> None:
    env = platform.env
    added = run_cli(
        "users", "add", "--tenant", "demo", "--username", "a.analyst",
        "--role", "client_analyst", "--queue", "q-general", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    password = added.stdout.split("initial password (shown once): ")[1].split()[0]
    listed = run_cli("users", "list", "--tenant", "demo", env=env)
    assert "a.analyst\tdemo\tclient_analyst\tno-2fa queues=q-general" in listed.stdout
    taken = run_cli(
        "users", "add", "--tenant", "other", "--username", "A.Analyst", "--role",
        "client_analyst", env=env,
    )  # fmt: skip
    assert taken.returncode == 2 and "taken" in taken.stderr

    for _ in range(5):
        _login(platform, "a.analyst", "Wrong-Password-123")
    assert _login(platform, "a.analyst", password).status_code == 401
    unlocked = run_cli("users", "unlock", "a.analyst", env=env)
    assert unlocked.returncode == 0, unlocked.stderr
    assert _login(platform, "a.analyst", password).json()["stage"] == "enrol_totp"


def test_users_add_reads_a_chosen_password_from_stdin_and_checks_the_policy(
    platform: PlateauUp,
) -> None:
    def add(username: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "users", "add", "--tenant", "demo", "--username", username,
             "--role", "client_supervisor", "--password-stdin"],
            input=password + "\n", env=platform.env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    weak = add("s.weak", "s.weak-Password1")
    assert weak.returncode == 2
    assert "must not contain the username" in weak.stderr and "Traceback" not in weak.stderr
    chosen = add("s.chosen", "Mpila-Poto-Poto-1990")
    assert chosen.returncode == 0, chosen.stderr
    assert "initial password" not in chosen.stdout  # the operator chose it: not echoed
    assert _login(platform, "s.chosen", "Mpila-Poto-Poto-1990").json()["stage"] == "enrol_totp"
