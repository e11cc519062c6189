"""``python -m plateau_dialer``: run the dialer until SIGTERM or SIGINT."""

from __future__ import annotations

from plateau_dialer.bootstrap import build_host


def main() -> None:
    raise SystemExit(build_host().run())


if __name__ == "__main__":
    main()
