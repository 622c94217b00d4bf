"""The reference target: a WebSocket server that welcomes, echoes and degrades on demand.

:mod:`~spikewatch.target.behaviour` holds the knobs, :mod:`~spikewatch.target.degrade`
decides bursts, recovery and capacity without I/O, :mod:`~spikewatch.target.tokens`
finds and checks JWTs, :mod:`~spikewatch.target.server` serves it with aiohttp, and
:mod:`~spikewatch.target.cli` is ``spikewatch target``.
"""

from spikewatch.target.behaviour import InvalidKnobError, TargetBehaviour
from spikewatch.target.degrade import TargetStats
from spikewatch.target.server import RunningTarget, start_reference_target

__all__ = [
    "InvalidKnobError",
    "RunningTarget",
    "TargetBehaviour",
    "TargetStats",
    "start_reference_target",
]
