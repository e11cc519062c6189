"""``python -m plateau_stats_projector``: run the stats projector until SIGTERM or SIGINT."""

from __future__ import annotations

from plateau_stats_projector.bootstrap import build_host


def main() -> None:
    raise SystemExit(build_host().run())


if __name__ == "__main__":
    main()
