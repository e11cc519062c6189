"""The gateway's configuration files: trunks, extensions and media, with the demo's defaults.

Demo defaults (no file configured): one trunk ``demo`` accepting calls from 127.0.0.1 for
+242053000100 (dialled as ``053000100`` or in E.164), 45 calls (4 Mbit/s of G.711); and
extensions 1001-1010 whose passwords are generated at first start into
``<PLATEAU_HOME>/sip-extensions.json`` (mode 0600) and read from there afterwards, so no
password is ever committed. No media file: no queue plays anything (callers hear ringback)
and outbound abandons hang up without a message.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from plateau_runtime.errors import ConfigurationError
from plateau_sip_gateway.domain.digest import Algorithm, derive_credentials
from plateau_sip_gateway.domain.directory import InMemoryDirectory
from plateau_sip_gateway.domain.trunks import TrunksConfig

DEMO_TENANT = "demo"
DEMO_DNIS = "+242053000100"
DEMO_EXTENSIONS = tuple(str(n) for n in range(1001, 1011))
EXTENSIONS_FILE_NAME = "sip-extensions.json"


def demo_trunks(tenant: str = DEMO_TENANT) -> TrunksConfig:
    """The embedded default's trunk: ``sipp`` on the same machine plays the carrier."""
    return TrunksConfig.model_validate(
        {
            "trunks": [
                {
                    "name": "demo",
                    "tenant": tenant,
                    "source_networks": ["127.0.0.1/32"],
                    "outbound": [{"host": "127.0.0.1", "port": 5070}],
                    "entry_points": {DEMO_DNIS: "sales"},
                    "capacity": {"kind": "bandwidth", "bandwidth_kbps": 4000},
                    "options_interval_s": 0,
                }
            ]
        }
    )


def load_trunks(path: Path | None, tenant: str = DEMO_TENANT) -> TrunksConfig:
    """The trunks of ``path`` (JSON), or the demo trunk when no file is configured."""
    if path is None:
        return demo_trunks(tenant)
    try:
        return TrunksConfig.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the trunks file {path}: {exc.strerror}",
            "check PLATEAU_SIP_TRUNKS_FILE",
        ) from None
    except ValueError as exc:
        raise ConfigurationError(
            f"the trunks file {path} is invalid: {exc}", "fix the file and start again"
        ) from None


def load_passwords(path: Path | None, home: Path) -> dict[str, str]:
    """``{extension: password}`` from ``path``; without one, the demo's generated file."""
    if path is None:
        path = home / EXTENSIONS_FILE_NAME
        if not path.exists():
            generate_passwords(path, DEMO_EXTENSIONS)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read the extensions file {path}: {exc}",
            'it must be a JSON object {"1001": "password", ...}: see PLATEAU_SIP_EXTENSIONS_FILE',
        ) from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in raw.items()
    ):
        raise ConfigurationError(
            f"the extensions file {path} is not an object of extension -> password",
            'write it as {"1001": "password", ...}',
        )
    return dict(raw)


def generate_passwords(path: Path, extensions: Sequence[str]) -> None:
    """Write random passwords for ``extensions`` to ``path``, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    passwords = {ext: secrets.token_urlsafe(12) for ext in extensions}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(passwords, out, indent=2)


def directory_for(
    passwords: Mapping[str, str], realm: str, algorithms: Sequence[Algorithm]
) -> InMemoryDirectory:
    """The credential directory (HA1s only; the passwords are not kept)."""
    return InMemoryDirectory(
        derive_credentials(ext, realm, password, algorithms) for ext, password in passwords.items()
    )


class QueueMedia(BaseModel):
    """What a caller waiting at one entry point hears, and whether its calls are recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    greeting: Path | None = Field(
        default=None, description="Played once when the call is queued (a WAV file)."
    )
    music: Path | None = Field(
        default=None, description="Played after the greeting, repeated, until an agent answers."
    )
    record: bool = Field(default=False, description="Record the call once an agent answers.")

    @property
    def plays(self) -> bool:
        """Whether the queue answers with early media (else the caller hears ringback)."""
        return self.greeting is not None or self.music is not None


class MediaConfig(BaseModel):
    """Per-entry-point queue media and the outbound compliance message (rtpengine only).

    Keyed by the trunk's entry point name (``entry_points`` in the trunks file), which the
    gateway knows when the call arrives, before the acd has chosen a queue.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    queues: dict[str, QueueMedia] = Field(default_factory=dict)
    compliance_message: Path | None = Field(
        default=None,
        description="Played to an answered outbound call no agent took in time, then BYE.",
    )

    def for_entry_point(self, entry_point: str | None) -> QueueMedia:
        return self.queues.get(entry_point or "", QueueMedia())

    def files(self) -> list[Path]:
        found = [self.compliance_message] if self.compliance_message else []
        for queue in self.queues.values():
            found += [f for f in (queue.greeting, queue.music) if f is not None]
        return found


def load_media(path: Path | None) -> MediaConfig:
    """The media configuration of ``path`` (JSON); none configured: nothing is played.

    Relative file names are taken from the configuration file's directory and made absolute,
    because rtpengine opens them itself, from its own working directory.
    """
    if path is None:
        return MediaConfig()
    try:
        config = MediaConfig.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the media file {path}: {exc.strerror}", "check PLATEAU_SIP_MEDIA_FILE"
        ) from None
    except ValueError as exc:
        raise ConfigurationError(
            f"the media file {path} is invalid: {exc}", "fix the file and start again"
        ) from None
    base = path.resolve().parent

    def absolute(file: Path | None) -> Path | None:
        return None if file is None else (base / file).resolve()

    config = MediaConfig(
        queues={
            name: queue.model_copy(
                update={"greeting": absolute(queue.greeting), "music": absolute(queue.music)}
            )
            for name, queue in config.queues.items()
        },
        compliance_message=absolute(config.compliance_message),
    )
    missing = [str(file) for file in config.files() if not file.is_file()]
    if missing:
        raise ConfigurationError(
            f"the media file {path} names audio files that do not exist: {', '.join(missing)}",
            "fix the paths (relative ones are read from the media file's directory)",
        )
    return config
