"""The shipped policy with quiet hours off, so a test does not depend on the time of day it runs at."""

from __future__ import annotations

from pathlib import Path

from agents.policy import DEFAULT_POLICY_PATH


def without_quiet_hours(directory: Path) -> Path:
    """A copy of the shipped policy in directory with quiet hours off (start == end); its path."""
    shipped = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    changed = shipped.replace('start: "21:00"', 'start: "00:00"').replace('end: "08:00"', 'end: "00:00"')
    assert changed != shipped, "the shipped policy's quiet hours moved; update tests/policies.py"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "policy-no-quiet-hours.yaml"
    path.write_text(changed, encoding="utf-8")
    return path
