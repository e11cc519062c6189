"""Reads a declarative configuration file (YAML, JSON being a subset) with line numbers, so
every problem names the line and the field: ``queues.yaml:14: tenants[0].queues[1].
ring_timeout_s: Input should be greater than or equal to 1``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plateau_acd.domain.config import ConfigError, Loc, PlateauConfig, load_config, location_path


@dataclass(frozen=True)
class FileProblem:
    """One problem of a configuration file, at a line and a field."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ConfigFileError(ValueError):
    """A configuration file cannot be applied; ``problems`` say where and why."""

    def __init__(self, problems: Sequence[FileProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _lines(node: yaml.Node, at: Loc, found: dict[Loc, int]) -> None:
    """The line of every key and item under ``node``, by its path."""
    found.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*at, str(key.value))
            found[path] = key.start_mark.line + 1
            _lines(value, path, found)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*at, index)
            found[path] = item.start_mark.line + 1
            _lines(item, path, found)


def _line_of(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    """The line of the field, or of its nearest enclosing part (a missing field)."""
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None


def parse_config_text(text: str, source: str) -> PlateauConfig:
    """Validate a configuration text; ``ConfigFileError`` names each problem's line and field."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(
            [FileProblem(source, mark.line + 1 if mark else None, "", f"not valid YAML: {problem}")]
        ) from None
    if not isinstance(data, Mapping):
        raise ConfigFileError(
            [FileProblem(source, 1, "", "the file must be a mapping with a `tenants` list")]
        )
    lines: dict[Loc, int] = {}
    if node is not None:
        _lines(node, (), lines)
    try:
        return load_config(data)
    except ConfigError as exc:
        raise ConfigFileError(
            [
                FileProblem(source, _line_of(p.loc, lines), location_path(p.loc), p.message)
                for p in exc.problems
            ]
        ) from None


def read_config_file(path: Path) -> PlateauConfig:
    """Read and validate a configuration file; ``ConfigFileError`` when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(
            [FileProblem(str(path), None, "", f"cannot be read: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigFileError([FileProblem(str(path), None, "", "is not UTF-8 text")]) from None
    return parse_config_text(text, path.name)
