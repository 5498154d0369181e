"""Memory settings (environment or `.env`), read next to the main Settings until they join them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Raw messages older than this are folded into a summary and archived: half a year keeps the running
# conversation verbatim while bounding what every recall has to rank.
DEFAULT_MESSAGE_RETENTION_DAYS = 183


class MemorySettings(BaseSettings):
    """CRM_EMBEDDINGS picks the embedding model; the rest tune retention."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    embeddings: Literal["local", "openai"] = Field(default="local", alias="CRM_EMBEDDINGS")
    embeddings_model: str = Field(default="text-embedding-3-small", alias="CRM_EMBEDDINGS_MODEL")
    message_retention_days: int = Field(
        default=DEFAULT_MESSAGE_RETENTION_DAYS, ge=1, alias="CRM_MEMORY_MESSAGE_DAYS"
    )
