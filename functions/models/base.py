"""The base of every model: unknown fields are refused and a parsed value is never changed."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
