"""The five roles. `default_roles()` is the set the runtime runs unless told otherwise."""

from __future__ import annotations

from agents.roles.base import Role
from agents.roles.billing import BillingMonitor
from agents.roles.curator import MemoryCurator
from agents.roles.leads import LeadQualification
from agents.roles.renewals import RenewalNudges
from agents.roles.triage import InboxTriage


def default_roles() -> list[Role]:
    """One instance of each role."""
    return [InboxTriage(), LeadQualification(), RenewalNudges(), BillingMonitor(), MemoryCurator()]


__all__ = [
    "BillingMonitor",
    "InboxTriage",
    "LeadQualification",
    "MemoryCurator",
    "RenewalNudges",
    "Role",
    "default_roles",
]
