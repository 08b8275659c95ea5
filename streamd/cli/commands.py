"""What the commands share: the subparsers they add themselves to, and options read as config sections."""

from __future__ import annotations

import argparse
from typing import Any, TypeAlias, TypeVar

from pydantic import BaseModel

from streamd.base.errors import InputError

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""`streamd`'s subcommands: each command module adds its own parser to them."""
ModelT = TypeVar("ModelT", bound=BaseModel)


def options_as(model: type[ModelT], given: dict[str, Any]) -> ModelT:
    """The options given on the command line as the config section they mirror: its
    defaults for those left out, its rules for those given (InputError naming the option)."""
    from pydantic import ValidationError

    try:
        return model.model_validate({key: value for key, value in given.items() if value is not None})
    except ValidationError as error:
        first = error.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_threshold", "").replace("_", "-")
        raise InputError(f"{option}: {first['msg']}") from None
