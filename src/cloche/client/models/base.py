"""The base of every API model: immutable, and blind to fields a newer server adds.

So a newer server that adds fields does not break an older SDK.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ApiModel(BaseModel):
    """Base for API models: frozen, ignores unknown fields."""

    model_config = ConfigDict(frozen=True, extra="ignore")
