"""Reading `streams.yaml`: bounded YAML with line numbers, then the schema, and every
problem at once as `file:line key.path: message` (`ConfigError`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from streamd.base.errors import ErrorKind, StreamdError
from streamd.base.redact import redact_text, register_secrets, url_secrets
from streamd.config.schema import _REPORT_AT, DUPLICATE_ID, LimitsConfig, StreamsConfig, duplicate_ids
from streamd.config.yaml_source import MAX_BYTES, ConfigProblem, KeyPath, YamlDocument, parse_yaml


class ConfigError(StreamdError):
    """The file is not a valid configuration; `errors` lists every problem."""

    kind = ErrorKind.config
    exit_code = 2

    def __init__(self, errors: list[ConfigProblem]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(error) for error in errors))

    def lines(self) -> list[str]:
        return [str(error) for error in self.errors]


@dataclass(frozen=True)
class LoadedConfig:
    """A configuration and where it came from."""

    config: StreamsConfig
    path: Path | None = None
    """The file, resolved; None for a configuration made in code."""
    sha256: str = ""
    """The SHA-256 of the file's bytes (never of expanded secrets); empty without a file."""


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> StreamsConfig:
    """Read and validate `path`; raises ConfigError listing every problem found."""
    return read_config(path, env).config


def _read_at_most_limit(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(MAX_BYTES + 1)  # never more: the file may be anything


def config_sha256(path: Path) -> str:
    """The SHA-256 that `read_config` would give the file now (OSError when unreadable)."""
    return hashlib.sha256(_read_at_most_limit(path)).hexdigest()


def read_config(
    path: str | Path, env: Mapping[str, str] | None = None, given: Mapping[tuple[str, str], Any] | None = None
) -> LoadedConfig:
    """Like load_config, with the file's resolved path and SHA-256."""
    path = Path(path)
    try:
        data = _read_at_most_limit(path)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(str(path), None, (), f"cannot read: {exc}")]) from None
    if len(data) > MAX_BYTES:
        message = f"larger than {MAX_BYTES // 2**20} MiB; a configuration may be at most that"
        raise ConfigError([ConfigProblem(str(path), None, (), message)])
    config = parse_config(text, str(path), base_dir=path.parent, env=env, given=given)
    return LoadedConfig(config, path.resolve(), hashlib.sha256(data).hexdigest())


def parse_config(
    text: str,
    file: str,
    base_dir: Path = Path("."),
    env: Mapping[str, str] | None = None,
    given: Mapping[tuple[str, str], Any] | None = None,
) -> StreamsConfig:
    """`given`: (section, key) -> a value the command line gives instead of the file's, in
    a section the file has (a model given by `--model` is then not looked for where the
    file says)."""
    doc = parse_yaml(text, file, os.environ if env is None else env)
    # Before any message is made: every secret in the file is masked from here on.
    register_secrets(secret for value in _strings(doc.data) for secret in url_secrets(value))
    errors = list(doc.errors)
    if doc.data is None and not errors:
        errors.append(ConfigProblem(file, None, (), f"the file is empty (an interrupted save?); {_NO_CAMERAS_HINT}"))
    data = doc.data
    if not isinstance(data, Mapping):
        if data is not None:
            errors.append(ConfigProblem(file, doc.line_of(()), (), "the top level must be a mapping of sections"))
        raise ConfigError(errors)
    for (section, key), value in (given or {}).items():
        if isinstance(data.get(section), Mapping):
            data = {**data, section: {**data[section], key: value}}
    too_many = _too_many_cameras(data, doc, file)
    if too_many is not None:
        raise ConfigError([*errors, too_many])  # validating them all could take minutes
    errors += _duplicate_ids(doc, file)
    config = None
    try:
        context = {"base_dir": base_dir, "env": os.environ if env is None else env}
        config = StreamsConfig.model_validate(data, context=context)
    except ValidationError as exc:
        errors += _describe(exc, doc, file, skip_duplicates=bool(errors))
    if errors or config is None:
        raise ConfigError(sorted(_unique(errors), key=lambda error: error.line or 0))
    return config


_NO_CAMERAS_HINT = "write `cameras: []` to run no cameras"


def _strings(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, Mapping):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)


def _too_many_cameras(data: Mapping[str, Any], doc: YamlDocument, file: str) -> ConfigProblem | None:
    cameras, limits = data.get("cameras"), data.get("limits")
    limit = limits.get("max_cameras") if isinstance(limits, Mapping) else None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        limit = LimitsConfig().max_cameras  # a bad value is reported by the validation
    if not isinstance(cameras, list) or len(cameras) <= limit:
        return None
    message = f"{len(cameras)} cameras, more than limits.max_cameras ({limit}) allows"
    return ConfigProblem(file, doc.line_of(("cameras",)), ("cameras",), message)


def _duplicate_ids(doc: YamlDocument, file: str) -> list[ConfigProblem]:
    """The schema's rule on the raw data, so duplicates are reported with every other
    error (the models' own check runs only once every camera validates)."""
    cameras = doc.data.get("cameras") if isinstance(doc.data, Mapping) else None
    if not isinstance(cameras, list):
        return []
    errors = []
    for index, first, camera_id in duplicate_ids([c.get("id") if isinstance(c, Mapping) else None for c in cameras]):
        path: KeyPath = ("cameras", index, "id")
        first_line = doc.line_of(("cameras", first, "id"))
        message = f"duplicate id '{camera_id}' (first used by cameras[{first}], line {first_line})"
        errors.append(ConfigProblem(file, doc.line_of(path), path, message))
    return errors


def _describe(exc: ValidationError, doc: YamlDocument, file: str, skip_duplicates: bool) -> list[ConfigProblem]:
    errors = []
    found = exc.errors(include_url=False)
    # A number or `auto` fails twice, once as each: the number's error is the one to show.
    wrong_numbers = {_error_path(e, doc) for e in found if not _is_not_auto(e)}
    auto_allowed = {_error_path(e, doc) for e in found if _is_not_auto(e)}
    for error in found:
        if skip_duplicates and error["type"] == DUPLICATE_ID:
            continue  # already reported per camera, with lines, by _duplicate_ids
        if _is_not_auto(error) and _error_path(error, doc) in wrong_numbers:
            continue
        path = _error_path(error, doc)
        message = _message(error)
        if error["type"] in ("int_parsing", "int_type") and path in auto_allowed:
            message = message.replace("must be a whole number", "must be a whole number or auto")
        if path == ("cameras",) and error["type"] == "missing":
            message += f" (an interrupted save?); {_NO_CAMERAS_HINT}"
        errors.append(ConfigProblem(file, doc.line_of(path), path, message))
    return errors


def _error_path(error: ErrorDetails, doc: YamlDocument) -> KeyPath:
    # A rule across sections names where to report it: the first of its keys the file has.
    candidates = (error.get("ctx") or {}).get(_REPORT_AT)
    if candidates:
        return next((tuple(path) for path in candidates if tuple(path) in doc.lines), tuple(candidates[-1]))
    # Pydantic appends the validator's name for `mode="after"` model validators; drop
    # anything that is not a real key. A camera key that the camera does not set came
    # from `defaults`: point there, where the operator must fix it.
    path = tuple(
        part
        for part in error["loc"]
        if isinstance(part, int) or not (part.startswith("_") or part in _UNION_MEMBERS or _AUTO in part)
    )
    if len(path) >= 3 and path[0] == "sinks" and path[2] in _SINK_TYPES:
        path = (*path[:2], *path[3:])  # the tagged union's tag is not a key of the file
    if error["type"] == "union_tag_invalid":
        path = (*path, "type")
    if len(path) >= 3 and path[0] == "cameras" and path not in doc.lines:
        from_defaults = ("defaults", *path[2:])
        if from_defaults in doc.lines:
            return from_defaults
    return path


_SINK_TYPES = ("jsonl", "redis", "mqtt")
# Pydantic names the member of `int | Literal["auto"]` that failed in the error's path.
_UNION_MEMBERS = frozenset({"int", "constrained-int"})
_AUTO = "literal['auto']"


def _is_not_auto(error: ErrorDetails) -> bool:
    return error["type"] == "literal_error" and bool(error["loc"]) and error["loc"][-1] == _AUTO


_MESSAGES = {
    "union_tag_invalid": "unknown sink type {tag!r}: one of {expected_tags}",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "is required",
    "finite_number": "must be a finite number",
    "extra_forbidden": "unknown key",
    "string_pattern_mismatch": "must match {pattern}",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "enum": "must be one of {expected}",
    "literal_error": "must be {expected}",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a mapping of keys",
    "dict_type": "must be a mapping of keys",
}
# Errors where showing the offending text helps (never for URLs: they hold passwords).
_SHOW_TEXT_INPUT = frozenset(
    {"enum", "literal_error", "string_pattern_mismatch", "float_parsing", "int_parsing", "bool_parsing"}
)


def _message(error: ErrorDetails) -> str:
    template = _MESSAGES.get(error["type"])
    context = error.get("ctx") or {}
    if template is not None:
        message = template.format(**context)
    else:
        message = str(context.get("error", error["msg"]))
        message = message.removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and error["type"] != "missing":
        message += f" (got {value})"
    elif isinstance(value, str) and error["type"] in _SHOW_TEXT_INPUT:
        message += f" (got {value!r})"
    return redact_text(message)


def _unique(errors: list[ConfigProblem]) -> list[ConfigProblem]:
    # A bad `defaults` value fails once per camera that inherits it; report it once.
    return list(dict.fromkeys(errors))
