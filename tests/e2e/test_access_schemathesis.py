"""schemathesis against the running access gateway's published OpenAPI document: requests
generated for every operation — without credentials, with an operator admin's session
(unsafe operations included, but those that would end the session), with the admin's API
token and with a client supervisor's — never get a server error (5xx), and every response
keeps to the document (status code, content type and body schema).

The runs are bounded so that the test fits a CI job: at most ``MAX_EXAMPLES`` generated
requests per operation and run, one worker each, the four at once, and three requests of
at most 5 s to the endless event stream. The seed is random on purpose (a fixed one would
only ever test the same requests); a failure prints schemathesis's report with a cURL
reproduction and the seed (``--seed`` replays it), and leaves its crash files in the
test's temporary directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from plateau_e2e import PlateauUp, cli_env, make_home, wait_for_https

pytestmark = pytest.mark.e2e

ST = [sys.executable, "-m", "schemathesis.cli"]
SESSION_COOKIE = "__Host-plateau_session"
SESSION_ENDING = r"^/api/v1/auth/(logout|logout-everywhere|password)$"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
MAX_EXAMPLES = 15
RUN_TIMEOUT = 200.0
# The event stream never ends: schemathesis reads it until its request timeout (or the
# first event), so it gets a few requests only, each cut after 5 s (slack for a loaded CI
# machine: a request timeout is a failure).
CONFIG = """\
request-timeout = 30

[[operations]]
include-path = "/api/v1/stream"
request-timeout = 5
max-stream-events = 1
generation.max-examples = 3
"""


def _credentials(base: str, home: Path) -> dict[str, tuple[str, ...]]:
    """The headers of each run: none; a session of the demo operator admin (cookie and CSRF
    token, so the unsafe operations are reached too); a day-long API token of the admin;
    one of the demo client supervisor (made by the admin, so no second factor is needed)."""
    users = json.loads((home / "access-users.json").read_text())["users"]
    admin = next(u for u in users if u["role"] == "operator_admin")
    with httpx.Client(base_url=base, verify=False, timeout=30) as client:
        login = client.post(
            "/api/v1/auth/login",
            json={"username": admin["username"], "password": admin["password"]},
        )
        assert login.status_code == 200, login.text
        assert login.json()["stage"] == "active"
        session = login.cookies[SESSION_COOKIE]
        csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
        mine = client.post("/api/v1/tokens", json={"name": "schemathesis", "days": 1}, headers=csrf)
        assert mine.status_code == 201, mine.text
        listed = client.get("/api/v1/admin/users")
        assert listed.status_code == 200, listed.text
        supervisor = next(u for u in listed.json() if u["role"] == "client_supervisor")
        theirs = client.post(
            f"/api/v1/admin/users/{supervisor['user_id']}/tokens",
            json={"name": "schemathesis", "days": 1},
            headers=csrf,
        )
        assert theirs.status_code == 201, theirs.text
    return {
        "anonymous": (),
        "admin-session": (
            f"Cookie: {SESSION_COOKIE}={session}",
            f"X-CSRF-Token: {csrf['X-CSRF-Token']}",
        ),
        "admin-token": (f"Authorization: Bearer {mine.json()['token']}",),
        "client-token": (f"Authorization: Bearer {theirs.json()['token']}",),
    }


class Schemathesis:
    """One bounded schemathesis run, started from its own directory (its crash files and
    example database start empty, so no earlier run changes what this one tests), its
    output in ``output.txt`` there."""

    def __init__(self, base: str, workdir: Path, headers: tuple[str, ...]) -> None:
        self.workdir = workdir
        workdir.mkdir()
        (workdir / "schemathesis.toml").write_text(CONFIG)
        args = [
            *ST,
            "--config-file",
            str(workdir / "schemathesis.toml"),
            "run",
            f"{base}/api/v1/openapi.json",
            "--tls-verify",
            "false",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(MAX_EXAMPLES),
            # Not the "coverage" phase: under CPython 3.11 it sometimes crashes inside
            # hypothesis (describing a filter lambda: "AST constructor recursion depth
            # mismatch"), which says nothing about the API. Examples and fuzzing still
            # reach every operation.
            "--phases",
            "examples,fuzzing",
            "--workers",
            "1",
            "--report",
            "junit",
            "--report-dir",
            str(workdir / "report"),
        ]
        for header in headers:
            args += ["--header", header]
        if any(header.startswith("Cookie:") for header in headers):
            # They would end the session (or every other one) the run is made with.
            args += ["--exclude-path-regex", SESSION_ENDING]
        with (workdir / "output.txt").open("wb") as output:
            self.process = subprocess.Popen(
                args,
                cwd=workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
            )

    def failure(self, deadline: float) -> str | None:
        """None when the run passed; else what it printed (the end of it)."""
        try:
            code = self.process.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        if code == 0:
            return None
        output = (self.workdir / "output.txt").read_text(errors="replace")
        verdict = f"ran over {RUN_TIMEOUT:.0f} s" if code is None else f"exit code {code}"
        return f"== {self.workdir.name}: {verdict} ({self.workdir})\n{output[-10000:]}"


def test_generated_requests_keep_to_the_published_openapi(tmp_path: Path) -> None:
    assert importlib.util.find_spec("schemathesis") is not None, (
        "schemathesis is not installed: it is a dev dependency (pip install -e '.[dev]')"
    )
    home = make_home()
    # Generated traffic would soon meet the rate limits (429 is not what is tested here):
    # the operator's own settings raise them for this installation.
    env = cli_env(home, PLATEAU_RATE_PER_SOURCE="1000000", PLATEAU_RATE_PER_PRINCIPAL="1000000")
    up = PlateauUp(env)
    runs: list[Schemathesis] = []
    try:
        assert up.wait_for("Plateau is up"), up.output()[-4000:]
        wait_for_https(env["PLATEAU_HTTPS_PORT"])
        base = f"https://127.0.0.1:{env['PLATEAU_HTTPS_PORT']}"
        # The admin logs in first: the anonymous run's failed logins may lock out this
        # source address, which would then refuse the login (not the session or tokens).
        credentials = _credentials(base, home)
        # All at once: they share the machine's cores rather than take turns. A token may
        # only read, so with one every unsafe operation must answer 403.
        for name, headers in credentials.items():
            runs.append(Schemathesis(base, tmp_path / name, headers))
        deadline = time.monotonic() + RUN_TIMEOUT
        failures = [failure for run in runs if (failure := run.failure(deadline)) is not None]
        assert not failures, "\n\n".join(failures)
    finally:
        for run in runs:
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()
        with contextlib.suppress(subprocess.TimeoutExpired):
            up.stop()
        if up.process.poll() is None:
            up.kill_everything()
        shutil.rmtree(home.parent, ignore_errors=True)
    assert up.process.returncode == 0, up.output()[-4000:]
