"""Base class of event payloads and the registry of ``ce_type`` → class."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

EVENT_TYPES: dict[str, type[EventData]] = {}


class EventData(BaseModel):
    """An event's ``data``. Subclasses set ``ce_type``, ``topic`` and ``schema_version``.

    Unknown fields are ignored so that a newer producer (a later schema version adding
    fields) does not break an older consumer.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    ce_type: ClassVar[str]
    topic: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ce_type = cls.__dict__.get("ce_type")
        if ce_type is not None:
            if ce_type in EVENT_TYPES:
                raise TypeError(f"duplicate event type {ce_type!r}")
            EVENT_TYPES[ce_type] = cls

    @classmethod
    def dataschema(cls) -> str:
        return f"urn:ticketing:{cls.ce_type}:v{cls.schema_version}"


def event_class(ce_type: str) -> type[EventData] | None:
    return EVENT_TYPES.get(ce_type)
