"""The event log, its projections, identity resolution and customer memory.

Imports nothing of the project's but itself (DESIGN.md, layout).
"""

# Event types and projection handlers that live in their own modules register on import; importing
# them here means every reader of the log (replay, projector, slice) knows them.
from store import proposal_projection as _proposal_projection  # noqa: F401  (and store.proposals)
from store.memory import events as _memory_events  # noqa: F401
