"""Agent roles, the policy enforcer and the model client: they propose, never act."""
