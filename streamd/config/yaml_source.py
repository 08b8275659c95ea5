"""Read YAML into plain data, remembering the line of every key and item.

Validation errors must name `file:line key.path`, so the document is composed into
nodes (PyYAML keeps their positions) and converted by hand. The same walk rejects
duplicate keys (PyYAML would silently keep the last) and expands `${...}` references:

- `${NAME}`: the environment variable NAME;
- `${credential:NAME}`: the file NAME in systemd's `$CREDENTIALS_DIRECTORY`
  (`LoadCredential=` in the unit), trailing newline stripped;
- `$$`: a literal `$`.

The file is untrusted input to a long-running process, so the walk is bounded before
anything is built: aliases are refused (a few hundred bytes of nested aliases expand to
gigabytes), nesting stops at `MAX_DEPTH` and the text at `MAX_BYTES`. Each limit is
reported like any other error, at its line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

MAX_BYTES = 4 * 1024 * 1024  # a 1000-camera file is about 150 KB
MAX_DEPTH = 32  # streams.yaml needs 5 levels
_REFERENCE = re.compile(r"\$\$|\$\{(?:(?P<kind>credential):)?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)\}")


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a source file, at a line and key path."""

    file: str
    line: int | None
    path: KeyPath
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = format_path(self.path)
        return f"{where} {key}: {self.message}" if key else f"{where}: {self.message}"


@dataclass
class YamlDocument:
    """Plain data plus the 1-based line of every key path in it."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    errors: list[ConfigProblem] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that exists."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def format_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def expand_references(value: str, env: Mapping[str, str]) -> str:
    """Expand `${NAME}`, `${credential:NAME}` and `$$` in `value`; KeyError names what is missing."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name")
        if match.group("kind") == "credential":
            directory = env.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise KeyError(f"credential {name!r}: $CREDENTIALS_DIRECTORY is not set")
            path = Path(directory) / name
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise KeyError(f"credential {name!r}: cannot read {path}: {exc.strerror}") from None
        if name not in env:
            raise KeyError(f"environment variable {name} is not set")
        return env[name]

    return _REFERENCE.sub(replace, value)


class _LimitError(yaml.MarkedYAMLError):
    """A limit of this module, raised where PyYAML raises its own errors so it is located alike."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and nesting beyond MAX_DEPTH while composing.

    Composing recurses once per level, so the depth check also keeps a 10,000-deep
    document from ending in RecursionError.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark  # the stubs' Mark union does not fit MarkedYAMLError
        if isinstance(event, yaml.AliasEvent):
            raise _LimitError(
                problem=f"aliases (*{event.anchor}) are not allowed: they let a few bytes expand without "
                "limit; write the value out, or put shared camera settings in `defaults`",
                problem_mark=mark,
            )
        if not isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Converter:
    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.loader = yaml.SafeLoader("")
        self.doc = YamlDocument(data=None)

    def error(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        self.doc.errors.append(ConfigProblem(self.file, node.start_mark.line + 1, path, message))

    def construct_scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        try:
            return self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            self.error(node, path, f"cannot read value: {getattr(exc, 'problem', exc)}")
            return None
        except ValueError:  # Python refuses to convert integers this long (CVE-2020-10735)
            self.error(node, path, f"cannot read value: more than {sys.get_int_max_str_digits()} digits")
            return None

    def convert(self, node: yaml.Node, path: KeyPath) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.error(key_node, path, "merge keys (<<) are not supported; use `defaults`")
                    continue
                key = self.construct_scalar(key_node, path)
                if not isinstance(key, str):
                    self.error(key_node, path, f"key {key!r} must be a string")
                    continue
                if key in result:
                    first = self.doc.lines.get((*path, key))
                    self.error(key_node, (*path, key), f"duplicate key (first at line {first})")
                    continue
                self.doc.lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = self.convert(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self.construct_scalar(node, path)
        if isinstance(value, str) and "$" in value:
            try:
                value = expand_references(value, self.env)
            except KeyError as exc:
                self.error(node, path, str(exc.args[0]))
        return value


def parse_yaml(text: str, file: str, env: Mapping[str, str] | None = None) -> YamlDocument:
    """Parse `text`; syntax problems come back in `errors`, never as exceptions."""
    converter = _Converter(file, os.environ if env is None else env)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        message = f"the file is {size / 2**20:.1f} MiB; a configuration may be at most {MAX_BYTES // 2**20} MiB"
        converter.doc.errors.append(ConfigProblem(file, None, (), message))
        return converter.doc
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        prefix = "" if isinstance(exc, _LimitError) else "invalid YAML: "
        converter.doc.errors.append(ConfigProblem(file, line, (), f"{prefix}{problem}"))
        return converter.doc
    finally:
        loader.dispose()
    if node is not None:
        converter.doc.data = converter.convert(node, ())
    return converter.doc
