"""The ``[coverage]`` settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CoverageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partial_threshold: float = Field(default=0.9, gt=0, le=1)
    """An area whose reach rate is below this (and above zero) is flagged
    ``partially_reached``."""
