"""``python -m plateau_acd``: run the ACD until SIGTERM or SIGINT."""

from __future__ import annotations

from plateau_acd.bootstrap import build_host


def main() -> None:
    raise SystemExit(build_host().run())


if __name__ == "__main__":
    main()
