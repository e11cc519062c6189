"""``python -m plateau_sip_gateway``: run the SIP gateway until SIGTERM or SIGINT."""

from __future__ import annotations

from plateau_sip_gateway.bootstrap import build_host


def main() -> None:
    raise SystemExit(build_host().run())


if __name__ == "__main__":
    main()
