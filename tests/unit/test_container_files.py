"""The container files say what the README promises: checked where no Docker daemon runs.

`docker-compose.yml` is validated against the Compose Specification's JSON schema (vendored in
tests/fixtures/compose, with its source), then read for what the schema cannot know.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "fixtures" / "compose" / "compose-spec.json"
APP_SERVICES = ("web", "bot", "worker", "scheduler")
NUMBERS = dict(
    enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
        ]
    )
)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_compose_file_is_valid_compose() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_broken_compose_file() -> None:
    broken = compose()
    broken["services"]["web"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["worker"]["restart"] = 3
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))
    assert len(errors) >= 2


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_service_waits_for_migrate_to_complete(name: str) -> None:
    service = compose()["services"][name]
    assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_migrate_runs_once_and_waits_only_for_the_database() -> None:
    migrate = compose()["services"]["migrate"]
    assert migrate["command"] == ["crm", "migrate"]
    assert migrate["restart"] == "no"
    assert set(migrate["depends_on"]) == {"postgres"}


def test_bot_stays_stopped_when_no_chat_app_is_configured() -> None:
    bot = compose()["services"]["bot"]
    assert bot["command"] == ["crm", "bot", "--if-configured"], "exits 0 with nothing to serve"
    assert bot["restart"] == "on-failure", "unless-stopped would start it again after its exit 0"


def test_only_web_keeps_the_http_health_check() -> None:
    services = compose()["services"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    for name in ("bot", "worker", "scheduler", "migrate"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_the_image_serves_as_a_non_root_user_with_a_health_check() -> None:
    lines = dockerfile()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert any(re.fullmatch(r"EXPOSE 8000", line) for line in lines)
    health = next(line for line in lines if line.startswith("HEALTHCHECK "))
    assert "/healthz" in health
    env = " ".join(line for line in lines if line.startswith("ENV "))
    assert "HOST=0.0.0.0" in env and "CRM_CONSOLE=serve" in env and "PORT=8000" in env
    assert lines[-1] == 'CMD ["crm", "run"]'


def test_the_manifest_and_readme_count_the_http_mode_urls_right() -> None:
    manifest = (ROOT / "slack-manifest.yml").read_text()
    commented = re.findall(r"^\s*# (?:request_)?url: https://\S+/slack/events", manifest, re.MULTILINE)
    word = NUMBERS[len(commented)]
    assert f"uncomment the {word} URLs" in manifest
    assert f"uncomment the {word} `…/slack/events` URLs" in (ROOT / "README.md").read_text()
    uncommented = yaml.safe_load(manifest.replace("# url:", "url:").replace("# request_url:", "request_url:"))
    commands = uncommented["features"]["slash_commands"]
    assert all(command["url"].endswith("/slack/events") for command in commands)
