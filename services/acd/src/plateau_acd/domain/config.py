"""The declarative configuration of the acd: tenants, pause codes, queues, entry points, agents.

``load_config(data)`` validates a parsed file (a mapping, as YAML or JSON gives it) and
returns a ``PlateauConfig``, or raises ``ConfigError`` listing every problem with the path
of the field it is about (``tenants[0].queues[1].ring_timeout_s``). Field checks come
from the models; cross-references (an entry point's queue, an overflow target, duplicate
ids or extensions) are checked after, with the same kind of path. Mapping a path to a line
of the file is the loader's job: ``ConfigProblem.loc`` keeps the raw location for that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from plateau_acd.domain.agent import DEFAULT_TIME_ZONE
from plateau_acd.domain.queue import FinalAction, QueueConfig, SkillRequirement, Strategy
from plateau_contracts.events.agents import NOT_RESPONDING, Skill
from plateau_contracts.events.common import E164

Ident = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
]
Extension = Annotated[str, StringConstraints(pattern=r"^[0-9]{2,8}$")]

Loc = tuple[int | str, ...]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QueueSkillSpec(_Spec):
    """A skill a queue requires, at a minimum level."""

    name: str = Field(min_length=1, description="Skill name.", examples=["french"])
    min_level: int = Field(default=1, ge=1, le=10, description="Lowest level accepted.")


class QueueSpec(_Spec):
    """A queue: how its calls wait, are routed and leave."""

    id: Ident = Field(description="Queue id.", examples=["q-support"])
    name: str = Field(min_length=1, description="Display name.")
    strategy: Strategy = Field(default=Strategy.LONGEST_IDLE, description="Routing strategy.")
    required_skills: tuple[QueueSkillSpec, ...] = Field(default=(), description="Skills needed.")
    service_level_threshold_s: int = Field(default=20, ge=1, description="Answer-within, s.")
    service_level_target: float = Field(default=0.8, ge=0, le=1, description="Target share.")
    wrap_up_s: int | None = Field(default=None, ge=0, description="Wrap-up timer; null: manual.")
    ring_timeout_s: int = Field(default=15, ge=1, le=300, description="Ring before RONA, s.")
    max_wait_s: int | None = Field(default=None, ge=1, description="Longest wait; null: none.")
    overflow_queue: Ident | None = Field(default=None, description="Queue past max wait.")
    final_action: FinalAction = Field(
        default=FinalAction.HANG_UP, description="Past max wait without overflow."
    )
    priority: int = Field(default=0, ge=0, le=100, description="Across shared agents.")

    def to_queue_config(self) -> QueueConfig:
        """The domain's queue configuration."""
        return QueueConfig(
            queue_id=self.id,
            name=self.name,
            strategy=self.strategy,
            required_skills=tuple(
                SkillRequirement(s.name, s.min_level) for s in self.required_skills
            ),
            service_level_threshold_s=self.service_level_threshold_s,
            service_level_target=self.service_level_target,
            wrap_up_s=self.wrap_up_s,
            ring_timeout_s=self.ring_timeout_s,
            max_wait_s=self.max_wait_s,
            overflow_queue_id=self.overflow_queue,
            final_action=self.final_action,
            priority=self.priority,
        )


class EntryPointSpec(_Spec):
    """A dialled number and the queue its calls go to."""

    dnis: E164 = Field(description="Dialled number, E.164.")
    queue: Ident = Field(description="Queue id.")
    name: str | None = Field(default=None, description="Display name.")


class AgentSpec(_Spec):
    """An agent: who, on which extension, with which skills."""

    id: Ident = Field(description="Agent id.", examples=["a-1001"])
    name: str = Field(min_length=1, description="Display name.")
    extension: Extension = Field(description="SIP extension.", examples=["1001"])
    skills: tuple[Skill, ...] = Field(default=(), description="Skills with levels 1-10.")


class TenantSpec(_Spec):
    """A tenant (client account) with its pause codes, queues, entry points and agents."""

    id: Ident = Field(description="Tenant id.", examples=["mno"])
    name: str = Field(min_length=1, description="Display name.")
    time_zone: str = Field(default=DEFAULT_TIME_ZONE, description="IANA time zone.")
    pause_codes: tuple[Ident, ...] = Field(default=("break",), description="Pause codes.")
    queues: tuple[QueueSpec, ...] = Field(default=(), description="Queues.")
    entry_points: tuple[EntryPointSpec, ...] = Field(default=(), description="Entry points.")
    agents: tuple[AgentSpec, ...] = Field(default=(), description="Agents.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name such as Africa/Brazzaville)"
            ) from None
        return value

    @field_validator("pause_codes")
    @classmethod
    def _not_the_acd_code(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if NOT_RESPONDING in value:
            raise ValueError(f"{NOT_RESPONDING!r} is the acd's own pause code; choose another name")
        return value

    def queue_configs(self) -> tuple[QueueConfig, ...]:
        """The tenant's queues as the domain configures them."""
        return tuple(queue.to_queue_config() for queue in self.queues)

    def entry_point_map(self) -> dict[str, str]:
        """Dialled number -> queue id."""
        return {ep.dnis: ep.queue for ep in self.entry_points}


class PlateauConfig(_Spec):
    """A whole configuration file."""

    version: int = Field(default=1, ge=1, le=1, description="Format version of the file.")
    # Not ``min_length``: pydantic would add that error to every invalid tenant's own.
    tenants: tuple[TenantSpec, ...] = Field(description="Tenants (at least one).")


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a configuration file, at a field."""

    loc: Loc
    message: str

    @property
    def path(self) -> str:
        """The field's path, e.g. ``tenants[0].queues[1].ring_timeout_s``."""
        return location_path(self.loc)

    def __str__(self) -> str:
        return f"{self.path or '(file)'}: {self.message}"


class ConfigError(ValueError):
    """A configuration file is invalid; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


def location_path(loc: Sequence[int | str]) -> str:
    """A pydantic error location as a path: ``("tenants", 0, "id")`` -> ``tenants[0].id``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif path:
            path += f".{part}"
        else:
            path = str(part)
    return path


def load_config(data: Mapping[str, Any]) -> PlateauConfig:
    """Validate a parsed configuration file; raises ``ConfigError`` naming each field."""
    try:
        config = PlateauConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(
            [
                ConfigProblem(tuple(e["loc"]), e["msg"].removeprefix("Value error, "))
                for e in error.errors()
            ]
        ) from None
    problems = list(_reference_problems(config))
    if problems:
        raise ConfigError(problems)
    return config


def _reference_problems(config: PlateauConfig) -> Iterator[ConfigProblem]:
    if not config.tenants:
        yield ConfigProblem(("tenants",), "at least one tenant is needed")
    yield from _duplicates(("tenants",), [t.id for t in config.tenants], "id", "tenant id")
    for t, tenant in enumerate(config.tenants):
        at: Loc = ("tenants", t)
        queue_ids = {q.id for q in tenant.queues}
        yield from _duplicates((*at, "queues"), [q.id for q in tenant.queues], "id", "queue id")
        yield from _duplicates(
            (*at, "entry_points"), [e.dnis for e in tenant.entry_points], "dnis", "entry point"
        )
        yield from _duplicates((*at, "agents"), [a.id for a in tenant.agents], "id", "agent id")
        yield from _duplicates(
            (*at, "agents"), [a.extension for a in tenant.agents], "extension", "extension"
        )
        for q, queue in enumerate(tenant.queues):
            target = queue.overflow_queue
            where = (*at, "queues", q, "overflow_queue")
            if target == queue.id:
                yield ConfigProblem(where, "a queue cannot overflow to itself")
            elif target is not None and target not in queue_ids:
                yield ConfigProblem(where, f"unknown queue {target!r}; known: {_known(queue_ids)}")
            if target is not None and queue.max_wait_s is None:
                yield ConfigProblem(
                    (*at, "queues", q, "max_wait_s"), "an overflow queue needs a max_wait_s"
                )
        for e, entry in enumerate(tenant.entry_points):
            if entry.queue not in queue_ids:
                yield ConfigProblem(
                    (*at, "entry_points", e, "queue"),
                    f"unknown queue {entry.queue!r}; known: {_known(queue_ids)}",
                )


def _duplicates(at: Loc, values: Sequence[str], field: str, what: str) -> Iterator[ConfigProblem]:
    counts = Counter(values)
    seen: set[str] = set()
    for index, value in enumerate(values):
        if counts[value] > 1 and value in seen:
            yield ConfigProblem((*at, index, field), f"duplicate {what} {value!r}")
        seen.add(value)


def _known(ids: set[str]) -> str:
    return ", ".join(sorted(ids)) or "none"
