"""``python -m plateau_access_gateway``: run the access gateway until SIGTERM or SIGINT."""

from __future__ import annotations

from plateau_access_gateway.bootstrap import build_host


def main() -> None:
    raise SystemExit(build_host().run())


if __name__ == "__main__":
    main()
