"""A tenant's secrets as the API shows them (never a value), and a key rotation."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from .base import ApiModel


class SecretInfo(ApiModel):
    """A tenant's secret as the API shows it: never its value."""

    name: str = Field(description="Referenced as ``${secret:NAME}`` in ``network.rules`` headers.")
    hosts: list[str] = Field(description="Host names (or ``*.wildcard`` names) the value may be sent to.")
    created_at: datetime | None = None
    updated_at: datetime | None = None


class SecretKeyRotation(ApiModel):
    """What ``client.secrets.rotate_key()`` did (admin)."""

    secrets: int = Field(description="Secrets re-encrypted under the new key.")
    keys: int = Field(description="Keys in the server's key file now, newest first.")
    dropped: int = Field(0, description="Old keys removed from the key file.")
