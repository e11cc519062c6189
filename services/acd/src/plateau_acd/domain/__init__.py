"""The acd's pure domain: agents, queues, routing strategies, the distributor, configuration.

No I/O and no clock: time comes in with the facts and triggers. ``agent`` is the agent state
machine (decide/evolve/fold over ``agent-*`` streams); ``queue`` holds a queue's settings and
its waiting calls in serving order; ``strategies`` ranks the agents free for a call and says
why the winner won; ``routing`` is the ``Distributor`` that turns triggers into decisions;
``config`` validates the declarative configuration file.
"""

from plateau_acd.domain.agent import AgentState, AgentStatus, Recorded
from plateau_acd.domain.queue import QueueConfig, QueueState, Strategy, WaitingCall
from plateau_acd.domain.routing import AcdState, Decision, Distributor, Trigger, apply, fold
from plateau_acd.domain.strategies import Choice, choose

__all__ = [
    "AcdState",
    "AgentState",
    "AgentStatus",
    "Choice",
    "Decision",
    "Distributor",
    "QueueConfig",
    "QueueState",
    "Recorded",
    "Strategy",
    "Trigger",
    "WaitingCall",
    "apply",
    "choose",
    "fold",
]
