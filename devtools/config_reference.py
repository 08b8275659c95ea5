"""The configuration reference (docs/configuration.md), generated from the models.

Every key of `streams.yaml`, with its type, default, bounds and the field's own
docstring, read from `streamd.config.schema`: the models are the single source, and
`tests/test_config_reference.py` fails when the file is stale.

    python -m devtools.config_reference --write   # regenerate docs/configuration.md
"""

from __future__ import annotations

import argparse
import enum
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from streamd.config.schema import StreamsConfig

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
HEADER = """# streams.yaml reference

Generated from the models in `streamd/config/schema.py` by
`python -m devtools.config_reference --write`; do not edit by hand (a test fails when
this file and the models disagree). Unknown keys are errors; numbers must be finite and
within the bounds shown. `defaults` takes every `cameras[]` key except `id` and `url`,
and a camera's own value wins.
"""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds (directly, optional, in a list or a union)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if origin in (list, typing.Union, types.UnionType):
        return [model for argument in typing.get_args(annotation) for model in _models_in(argument)]
    return []


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(argument) for argument in typing.get_args(annotation))
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return ", ".join(f"one `{getattr(item, 'type', type(item).__name__)}`" for item in value)
        return f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel):
        return "(its keys' defaults)"
    if isinstance(field.default, enum.Enum):
        return f"`{field.default.value}`"
    if field.default is None:
        return "`null`"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return f"`{field.default}`"


def _bounds(field: FieldInfo) -> str:
    marks = ((annotated_types.Gt, ">", "gt"), (annotated_types.Ge, ">=", "ge"),
             (annotated_types.Lt, "<", "lt"), (annotated_types.Le, "<=", "le"))  # fmt: skip
    parts = []
    for item in field.metadata:
        for kind, sign, attribute in marks:
            if isinstance(item, kind):
                parts.append(f"{sign} {getattr(item, attribute)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            parts.append(f"length >= {item.min_length}")
        if isinstance(item, annotated_types.MaxLen):
            parts.append(f"length <= {item.max_length}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def _row(key: str, field: FieldInfo, description: str) -> str:
    return f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {_bounds(field)} | {description} |"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        nested = _models_in(field.annotation)
        if len(nested) == 1 and typing.get_origin(field.annotation) is not list:
            rows += _rows(nested[0], f"{key}.")
            continue
        if nested and typing.get_origin(field.annotation) is list:
            continue  # a list of models has a section of its own
        rows.append(_row(key, field, description))
    return rows


def _table(title: str, intro: str, rows: list[str]) -> str:
    head = "| key | type | default | bounds | what it does |\n| --- | --- | --- | --- | --- |"
    return f"## {title}\n\n{intro}\n\n{head}\n" + "\n".join(rows) + "\n"


def reference() -> str:
    sections = [HEADER]
    for name, field in StreamsConfig.model_fields.items():
        description = " ".join((field.description or "").split())
        models = _models_in(field.annotation)
        if typing.get_origin(field.annotation) is list and models:
            for model in models:
                kind = model.model_fields.get("type")
                suffix = f" (type: {_type_name(kind.annotation)})" if kind is not None else ""
                sections.append(_table(f"`{name}[]`{suffix}", description, _rows(model, f"{name}[].")))
        elif models:
            sections.append(_table(f"`{name}`", description, _rows(models[0], f"{name}.")))
        else:
            sections.append(_table(f"`{name}`", description, [_row(name, field, description)]))
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.config_reference", description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {REFERENCE} instead of printing")
    args = parser.parse_args(argv)
    text = reference()
    if args.write:
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
