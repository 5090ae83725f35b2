"""Typed configuration loaded from YAML: pydantic models that forbid unknown fields.

Every file format (platform, plan, threats, campaign) is a ``Config`` subclass;
``load_yaml`` turns any validation failure into one ``ConfigError`` line that
names the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every configuration object: strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


def describe(exc: ValidationError) -> str:
    """The first validation error as ``field.path: message``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {message}{more}"


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from exc


def validate(cls: type[C], data: Any, source: str) -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc)}") from exc


def load_yaml(cls: type[C], path: Path) -> C:
    return validate(cls, read_yaml(path), str(path))


def dump_yaml(obj: BaseModel) -> str:
    data = obj.model_dump(mode="json", exclude_none=True)
    # PyYAML is untyped; with no stream, safe_dump returns the document as a str
    return cast(str, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100))
