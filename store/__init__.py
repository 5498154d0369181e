"""The event log, its projections, identity resolution and customer memory.

Imports nothing of the project's but itself (DESIGN.md, layout).
"""
