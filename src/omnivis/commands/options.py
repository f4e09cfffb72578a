"""Command-line options derived from a task's config dataclass, and the config a command runs with.

Every ``train``, ``pretrain`` and ``distill`` command takes one option per field of its config, so
the command line and the Python API cannot disagree. The rule:

- **name**: the field's name in kebab case (``img_size`` -> ``--img-size``). Fields of nested configs
  (``augment: AugmentConfig``, ``trainer: TrainerConfig``) are flattened to their own name
  (``trainer.epochs`` -> ``--epochs``), except the few in :data:`ALIASES` (older, shorter names,
  keyed by the field's dotted path) and a command's own aliases. Two fields that would get the same
  name are an error when the command is built: give one of them an alias.
- **type**: ``bool`` -> ``--x/--no-x``; ``int``, ``float`` and ``str``, each also as ``X | None``;
  ``tuple[str, ...]`` -> one comma-separated string.
- **default**: the dataclass default, ``default_factory`` ones included (a config holding
  ``TrainerConfig(epochs=60)`` shows ``--epochs 60``).
- **help**: the field's entry in the ``Attributes:`` section of its class docstring (``a, b: text``
  gives both the text; a subclass's entry wins over its base's).

The config a command runs with: the dataclass defaults, then ``--config FILE`` (YAML or JSON; a run's
``run_config.json`` is one), then the options given on the command line (only those: click tells a
default from a given value). ``--resume`` reads the run's own ``run_config.json`` instead.

Config modules import torch, so a command's options are only built when its help or parser is
first needed (:class:`ConfigCommand`): ``omnivis --help`` and ``omnivis train --help`` import no torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Mapping, Optional, Sequence, Union

import typer
from typer.core import TyperCommand

from omnivis.config import config_from_dict
from omnivis.errors import ConfigError

ALIASES: dict[str, str] = {
    "augment.preset": "augment",
    "trainer.checkpoint_every_n_steps": "checkpoint-every",
    "trainer.early_stopping_patience": "patience",
    "trainer.num_workers": "workers",
}
"""Option names that are not the field's own name, by the field's dotted path in its config."""

_VALUES = "omnivis.config_option_values"  # ctx.meta key: the derived options' values, by dotted path


@dataclasses.dataclass(frozen=True)
class ConfigOption:
    """One config field as a command-line option.

    Attributes:
        path: where the field sits in the config, e.g. ``("trainer", "epochs")``.
        name: the option without its dashes, e.g. ``epochs``.
        kind: ``bool``, ``int``, ``float``, ``str`` or ``tuple`` (of strings).
        optional: the field also takes None.
        default: the config's default (a tuple for ``tuple`` fields).
        help: the docstring's text for the field, with its ````code```` marks.
        section: (dotted path, class name) of the nested config the field belongs to (``None``: the
            config itself).
        required: the command needs a value (from the command line or ``--config``).
    """

    path: tuple[str, ...]
    name: str
    kind: type
    optional: bool
    default: Any
    help: str
    section: tuple[str, str] | None = None
    required: bool = False

    @property
    def key(self) -> str:
        """The dotted path, e.g. ``trainer.epochs``."""
        return ".".join(self.path)

    @property
    def dest(self) -> str:
        """The Python name click stores the value under."""
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        """How the option is spelled: ``--epochs``, or ``--hflip/--no-hflip`` for a bool."""
        return f"--{self.name}/--no-{self.name}" if self.kind is bool else f"--{self.name}"

    @property
    def cli_default(self) -> Any:
        """The default as the option holds it (a tuple as one comma-separated string)."""
        if self.kind is tuple and self.default is not None:
            return ",".join(self.default)
        return self.default

    def to_config(self, value: Any) -> Any:
        """The option's value as the config field takes it."""
        if self.kind is tuple and isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


# ---------------------------------------------------------------------------------------------------
# Reading a config dataclass


def config_defaults(cls: type) -> dict:
    """The defaults of config class ``cls`` as a nested dict (``default_factory`` values included).

    A field without a default is left out (its option is required).
    """
    data: dict = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        elif dataclasses.is_dataclass(hints.get(f.name)):
            value = config_defaults(hints[f.name])
        else:
            continue
        data[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return data


_ENTRY = re.compile(r"(?P<names>[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)(?:\s*\([^():]*\))?\s*:\s*(?P<text>.*)")


def parse_attributes(doc: str | None) -> dict[str, str]:
    """Field name -> text from a Google-style docstring's ``Attributes:`` section.

    An entry ``a, b: text`` documents both ``a`` and ``b`` (``a (int): text`` is read too); more-indented
    lines continue an entry.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if start is None:
        return {}
    header = len(lines[start]) - len(lines[start].lstrip())
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    entry_indent = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header:
            break
        entry_indent = indent if entry_indent is None else entry_indent
        match = _ENTRY.fullmatch(line.strip()) if indent == entry_indent else None
        if match:
            current = [match["text"]]
            for name in re.split(r"\s*,\s*", match["names"]):
                entries[name] = current
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(" ".join(text).split()) for name, text in entries.items()}


def attribute_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` entries of ``cls`` and its bases (a subclass's entry wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        docs.update(parse_attributes(klass.__dict__.get("__doc__")))
    return docs


def _option_kind(hint: Any, where: str) -> tuple[type, bool]:
    """(kind, optional) of a field's type; a type with no command-line form is a ``TypeError``."""
    optional = False
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            hint, optional = rest[0], True
    if hint in (bool, int, float, str):
        return hint, optional
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...):
        return tuple, optional
    raise TypeError(f"{where}: no command-line form for a field of type {hint!r}")


def config_options(
    cls: type,
    *,
    aliases: Mapping[str, str] | None = None,
    exclude: Sequence[str] = (),
    required: Sequence[str] = (),
) -> list[ConfigOption]:
    """One :class:`ConfigOption` per field of ``cls`` (nested configs flattened): required ones first, then
    in field order.

    Args:
        aliases: option names (without dashes) by dotted field path, on top of :data:`ALIASES`.
        exclude: dotted paths of fields that get no option.
        required: dotted paths of fields the command needs a value for.
    """
    names = {**ALIASES, **(aliases or {})}
    defaults = config_defaults(cls)
    options: list[ConfigOption] = []

    def walk(klass: type, values: dict, prefix: tuple[str, ...], section: tuple[str, str] | None) -> None:
        hints = typing.get_type_hints(klass)
        docs = attribute_docs(klass)
        for f in dataclasses.fields(klass):
            path = (*prefix, f.name)
            key = ".".join(path)
            if not f.init or key in exclude:
                continue
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, values.get(f.name, {}), path, (key, hint.__name__))
                continue
            kind, optional = _option_kind(hint, f"{cls.__name__}.{key}")
            options.append(ConfigOption(
                path=path, name=names.get(key, f.name.replace("_", "-")), kind=kind, optional=optional,
                default=values.get(f.name), help=docs.get(f.name, ""), section=section,
                required=key in required or f.name not in values,
            ))

    walk(cls, defaults, (), None)
    options.sort(key=lambda option: not option.required)  # required ones first (stable: field order otherwise)
    seen: dict[str, str] = {}
    for option in options:
        if option.name in seen:
            raise ValueError(f"{cls.__name__}: fields '{seen[option.name]}' and '{option.key}' would both be "
                             f"--{option.name}; give one an alias")
        seen[option.name] = option.key
    return options


# ---------------------------------------------------------------------------------------------------
# The command


def terminal_help(text: str) -> str:
    """Docstring text for the terminal: ````x```` marks dropped, rich markup escaped."""
    from rich.markup import escape

    return escape(re.sub(r"``(.+?)``", r"\1", text))


@dataclasses.dataclass(frozen=True)
class ConfigSpec:
    """Which config a command's options come from.

    Attributes:
        config: ``module:ClassName`` of the config dataclass (imported when first needed).
        aliases: option names by dotted field path, on top of :data:`ALIASES`.
        exclude: dotted field path -> why that field has no option.
        required: dotted paths of fields the command needs a value for.
    """

    config: str
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exclude: Mapping[str, str] = dataclasses.field(default_factory=dict)
    required: tuple[str, ...] = ()

    def config_class(self) -> type:
        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)

    def options(self) -> list[ConfigOption]:
        return config_options(self.config_class(), aliases=self.aliases, exclude=tuple(self.exclude),
                              required=self.required)


def _typer_params(options: list[ConfigOption], reserved: set[str]) -> list:
    """Typer's parameters for ``options``, built by typer itself from a function signature."""
    parameters = []
    for option in options:
        if {option.dest, option.name} & reserved:
            raise ValueError(f"config field '{option.key}' would shadow the command's own --{option.name}")
        kind = {tuple: str}.get(option.kind, option.kind)
        default = option.cli_default
        text = terminal_help(option.help)
        if option.required:
            text += " Required (here or in --config)."
        panel = f"{option.section[1]} ({option.section[0]})" if option.section else None
        info = typer.Option(option.flag, help=text, rich_help_panel=panel,
                            show_default=default not in (None, "") and not option.required)
        annotation = Annotated[Optional[kind] if option.optional else kind, info]  # noqa: UP007
        parameters.append(inspect.Parameter(option.dest, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))

    def options_only(**values: Any) -> None:  # pragma: no cover - never called: it only carries a signature
        """Stand-in whose signature typer turns into options."""

    options_only.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    options_only.__annotations__ = {p.name: p.annotation for p in parameters}
    holder = typer.Typer(add_completion=False)
    holder.command()(options_only)
    return list(typer.main.get_command(holder).params)


class ConfigCommand(TyperCommand):
    """A typer command that also takes one option per field of a config dataclass (``spec``).

    The function's own parameters (``--out``, ``--config``, ``--resume``, ``--json`` ...) come first;
    the derived options are added when the command's parameters are first read, so listing the
    commands imports no config module. Their values do not reach the function: it reads the config
    with :func:`build_config` (or :func:`given_values` / :func:`option_values`).
    """

    spec: ClassVar[ConfigSpec]
    _options_cache: ClassVar[list[ConfigOption] | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._derived: list | None = None
        super().__init__(*args, **kwargs)

    @property
    def params(self) -> list:  # type: ignore[override]
        if self._derived is None:
            own = self._own_params
            reserved = {p.name for p in own} | {opt.lstrip("-") for p in own for opt in (*p.opts, *p.secondary_opts)}
            self._derived = _typer_params(self.config_options(), reserved)
            own.extend(self._derived)
        return self._own_params

    @params.setter
    def params(self, value: list) -> None:
        self._own_params = value

    @classmethod
    def config_options(cls) -> list[ConfigOption]:
        if cls._options_cache is None:
            cls._options_cache = cls.spec.options()
        return cls._options_cache

    @classmethod
    def config_class(cls) -> type:
        return cls.spec.config_class()

    def invoke(self, ctx: typer.Context) -> Any:
        by_dest = {option.dest: option for option in self.config_options()}
        ctx.meta[_VALUES] = {by_dest[name]: ctx.params.pop(name) for name in list(ctx.params) if name in by_dest}
        return super().invoke(ctx)


def config_command(config: str, *, aliases: Mapping[str, str] | None = None, exclude: Mapping[str, str] | None = None,
                   required: Sequence[str] = ()) -> type[ConfigCommand]:
    """The ``cls=`` for ``app.command``: a :class:`ConfigCommand` over ``config`` (``module:ClassName``)."""
    spec = ConfigSpec(config, dict(aliases or {}), dict(exclude or {}), tuple(required))
    return type(f"ConfigCommand[{config.rpartition(':')[2]}]", (ConfigCommand,), {"spec": spec, "_options_cache": None})


# ---------------------------------------------------------------------------------------------------
# The config a command runs with


def option_values(ctx: typer.Context) -> dict[ConfigOption, Any]:
    """Every derived option's value (given or default), as the config field takes it."""
    return {option: option.to_config(value) for option, value in ctx.meta[_VALUES].items()}


def given_values(ctx: typer.Context) -> dict[ConfigOption, Any]:
    """The derived options given on the command line (not left at their default)."""
    return {option: value for option, value in option_values(ctx).items() if _given(ctx, option.dest)}


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def read_config_file(path: str | Path) -> dict:
    """A ``--config`` file (``.json``, ``.yaml`` or ``.yml``) as a dict; problems are one-line ``ConfigError``s."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    suffix = path.suffix.lower()
    text = path.read_text()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    else:
        raise ConfigError(f"{path}: --config takes a .json, .yaml or .yml file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    return data


def merge(base: dict, update: Mapping) -> dict:
    """``update`` written into ``base`` (nested dicts merged key by key); returns ``base``."""
    for key, value in update.items():
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def set_value(data: dict, path: Sequence[str], value: Any) -> None:
    """``data[path[0]][path[1]]... = value``, creating nested dicts on the way."""
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


def _get_value(data: Any, path: Sequence[str]) -> tuple[bool, Any]:
    for part in path:
        if not isinstance(data, Mapping) or part not in data:
            return False, None
        data = data[part]
    return True, data


def _check_file_keys(file_data: Mapping, options: list[ConfigOption], top_level: set[str], where: str) -> None:
    """A flattened key at the top of a file (``epochs: 3``) names its nested place (``trainer.epochs``)."""
    for key in file_data:
        if key in top_level:
            continue
        match = [o for o in options if len(o.path) > 1 and key in (o.path[-1], o.dest, o.name)]
        if match:
            nested = match[0].path
            raise ConfigError(f"{where}: unknown key '{key}'; did you mean '{nested[-1]}' under '{nested[0]}' "
                              f"({match[0].key})?")


def _checked(option: ConfigOption, value: Any, where: str) -> Any:
    """A value checked against the field's type (the command line's are typed already; a file's may not
    be: ``lr: 3e-3``, which YAML reads as a string, becomes 0.003)."""
    if value is None:
        if option.optional or option.required:
            return value
    elif option.kind is bool and isinstance(value, bool):
        return value
    elif option.kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif option.kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if isinstance(value, int) else value
    elif option.kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif option.kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)  # YAML reads `devices: 2` as a number
    elif option.kind is tuple and isinstance(value, (str, list, tuple)):
        if isinstance(value, str):
            return option.to_config(value)
        if all(isinstance(v, str) for v in value):
            return tuple(value)
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            tuple: "a list of strings"}[option.kind]
    raise ConfigError(f"{where}: {option.key} must be {kind}{' or null' if option.optional else ''}, got {value!r}")


def finish_config(cls: type, data: dict, options: list[ConfigOption], where: str) -> Any:
    """Check ``data`` (types, required fields) and build ``cls`` from it; unknown keys suggest the close match."""
    for option in options:
        found, value = _get_value(data, option.path)
        if found:
            set_value(data, option.path, _checked(option, value, where))
        if option.required and (not found or value in (None, "")):
            raise ConfigError(f"missing option --{option.name} (or {option.key} in --config)")
    return config_from_dict(cls, data, where=where)


def build_config(ctx: typer.Context, *, out: Path, resume: bool, config_file: Path | None, as_json: bool) -> Any:
    """The config the command runs with.

    Without ``--resume``: the config's defaults, then ``config_file``'s values, then the options
    given on the command line; ``--json`` turns the progress bar off. With ``--resume``: the run's
    own ``run_config.json`` (only ``--progress``/``--json`` still apply).
    """
    command = ctx.command
    assert isinstance(command, ConfigCommand), "build_config serves ConfigCommand commands"
    cls, options = command.config_class(), command.config_options()
    if resume:
        return resume_config(ctx, cls, out=out, config_file=config_file, as_json=as_json)
    data = config_defaults(cls)
    where = "options"
    if config_file is not None:
        file_data = read_config_file(config_file)
        where = str(config_file)
        _check_file_keys(file_data, options, set(data), where)
        merge(data, file_data)
    for option, value in given_values(ctx).items():
        set_value(data, option.path, value)
    if as_json and isinstance(data.get("trainer"), dict):
        data["trainer"]["progress"] = False
    return finish_config(cls, data, options, where)


def resume_config(ctx: typer.Context, cls: type, *, out: Path, config_file: Path | None, as_json: bool) -> Any:
    """The config of the run in ``out`` (its ``run_config.json``), with today's ``--progress``/``--json``."""
    from omnivis.tasks.common import load_run_config

    if config_file is not None:
        raise ConfigError("--config does not go with --resume: a resumed run continues with its own run_config.json")
    values = option_values(ctx)
    ignored = [f"--{o.name}" for o in given_values(ctx) if o.key != "trainer.progress"]
    if ignored:
        typer.echo(f"warning: --resume continues with {Path(out) / 'run_config.json'}; ignoring {', '.join(ignored)}",
                   err=True)
    config = load_run_config(cls, out)
    progress = next((v for o, v in values.items() if o.key == "trainer.progress"), True)
    config.trainer.progress = bool(progress) and not as_json
    return config


def flag_names(options: typing.Iterable[ConfigOption]) -> str:
    """``--a, --b`` for messages."""
    return ", ".join(f"--{o.name}" for o in options)


__all__ = [
    "ALIASES", "ConfigCommand", "ConfigOption", "ConfigSpec", "attribute_docs", "build_config", "config_command",
    "config_defaults", "config_options", "finish_config", "given_values", "merge", "option_values",
    "parse_attributes", "read_config_file", "resume_config", "set_value",
]
