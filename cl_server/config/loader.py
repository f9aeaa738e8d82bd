"""Load a YAML service config into :class:`ServiceConfig`, reporting every problem at once.

The file is parsed with a ``yaml.SafeLoader`` that also rejects duplicate keys, then ``${VAR}``
and ``${VAR:-default}`` are replaced from the environment in string values (for secrets), then
the schema validates the result. All problems (YAML, environment, schema) end up in one
:class:`ConfigError` whose message lists each invalid field by its path, e.g.::

    configs/bad.yaml: 2 problems
      drift.detectors[1].kind: unknown detector 'kss' (expected one of: ks, chi2, ...)
      engine.kuind: unknown field (did you mean 'kind'?)

Example:
    >>> import os
    >>> os.environ["EXAMPLE_TOKEN"] = "0123456789abcdef"
    >>> text = '''
    ... name: demo
    ... engine: {kind: triton, model_name: demo}
    ... model: {template: mlp, input: {shape: [4]}, classes: [a, b]}
    ... auth: {bootstrap_admin_token: "${EXAMPLE_TOKEN}"}
    ... '''
    >>> parse_config(text).auth.bootstrap_admin_token.get_secret_value()
    '0123456789abcdef'
    >>> parse_config("name: Demo!").name
    Traceback (most recent call last):
    ...
    cl_server.config.loader.ConfigError: <config>: 3 problems
      engine: required field missing
      model: required field missing
      name: must be 1-63 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit (got 'Demo!')
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cl_server.config.schema import NAME_PATTERN, ServiceConfig

MAX_CONFIG_BYTES = 1024 * 1024
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field: where (``path``, as in ``drift.detectors[1].kind``) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """A config file that cannot be used; ``problems`` lists every invalid field."""

    def __init__(self, source: str, problems: list[FieldProblem]):
        self.source = source
        self.problems = problems
        count = len(problems)
        header = f"{source}: {count} problem{'s' if count != 1 else ''}"
        super().__init__("\n".join([header, *(f"  {p}" for p in problems)]))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the last one silently winning hides typos)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def format_path(path: Path_) -> str:
    """``("drift", "detectors", 1, "kind")`` -> ``drift.detectors[1].kind``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _interpolate(value: Any, path: Path_, problems: list[FieldProblem],
                 env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), problems, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), problems, env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(FieldProblem(format_path(path),
                                     f"environment variable '{name}' is not set"))
        return match.group(0)

    return _VAR.sub(replace, value)


def _known_fields(model: type[BaseModel], raw: Any, loc: Path_) -> tuple[type[BaseModel] | None,
                                                                          list[str]]:
    """Walk ``loc`` through the schema to find the section an unknown key was found in."""
    current: Any = model
    data = raw
    for part in loc:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None, []
        field = current.model_fields.get(part)
        if field is None:
            return None, []
        data = data.get(part) if isinstance(data, dict) else None
        current = _section_type(field.annotation, data)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current, list(current.model_fields)
    return None, []


def _section_type(annotation: Any, data: Any) -> Any:
    """The BaseModel class a field holds (through tuples, Optionals and tagged unions)."""
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args or ():
        found = _section_type(arg, data)
        if found is None:
            continue
        kind_field = found.model_fields.get("kind")
        literal = getattr(kind_field.annotation, "__args__", ()) if kind_field else ()
        if isinstance(data, dict) and literal and data.get("kind") not in literal:
            continue
        return found
    return None


def _strip_union_tags(loc: Path_, raw: Any) -> Path_:
    """Drop the tag pydantic inserts into a tagged union's error path (``rules[0].time.x``)."""
    out: list[str | int] = []
    data = raw
    for part in loc:
        if isinstance(part, str) and isinstance(data, dict) and part not in data \
                and data.get("kind") == part:
            continue
        out.append(part)
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            data = None
    return tuple(out)


def _describe(error: dict[str, Any], raw: Any, loc: Path_) -> tuple[Path_, str]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "field_error":
        return (*loc, ctx["field"]), error["msg"]
    if kind == "extra_forbidden":
        section, known = _known_fields(ServiceConfig, raw, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), known, n=1) if section else []
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return loc, f"unknown field{hint}"
    if kind == "missing":
        return loc, "required field missing"
    if kind in ("unknown_choice", "url_scheme", "duplicate_class"):
        return loc, error["msg"]
    if kind == "union_tag_invalid":
        expected = str(ctx["expected_tags"]).replace("'", "")
        return (*loc, "kind"), f"unknown kind '{ctx['tag']}' (expected one of: {expected})"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return loc, (f"must be 1-63 characters of a-z, 0-9, '_', '.', '-', starting with a letter "
                     f"or digit (got {error['input']!r})")
    if kind == "union_tag_not_found":
        return (*loc, "kind"), "required field missing"
    value = error.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    message = re.sub(r"^Input should be ", "must be ", error["msg"])
    return loc, f"{message}{shown}"


def parse_config(text: str, source: str = "<config>",
                 env: Mapping[str, str] | None = None) -> ServiceConfig:
    """Parse YAML text into a validated :class:`ServiceConfig` or raise :class:`ConfigError`."""
    env = os.environ if env is None else env
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
        raise ConfigError(source, [FieldProblem("", f"invalid YAML: {where}{problem}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, [FieldProblem("", "the top level must be a mapping of sections "
                                                    f"(got {type(raw).__name__})")])
    problems: list[FieldProblem] = []
    data = _interpolate(raw, (), problems, env)
    env_paths = {p.path for p in problems}
    try:
        config = ServiceConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc, message = _describe(error, data, _strip_union_tags(error["loc"], data))
            path = format_path(loc)
            if path not in env_paths:
                problems.append(FieldProblem(path, message))
    else:
        if not problems:
            return config
    problems.sort(key=lambda p: p.path)
    raise ConfigError(source, problems)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None
                ) -> ServiceConfig:
    """Read and validate a YAML config file; raise :class:`ConfigError` listing every problem."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(str(file), [FieldProblem(
                "", f"file is {size} bytes; a config is at most {MAX_CONFIG_BYTES} bytes")])
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(file), [FieldProblem("", f"cannot read the file: {reason}")]) from None
    return parse_config(text, source=str(file), env=env)
