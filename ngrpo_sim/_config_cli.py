"""Command-line options generated from a config dataclass, with each field's docstring as its help
(CleanRL style).

A field's docstring is the string literal right under it in the class body; Python drops those at
run time, so they are read back from the source with ``ast``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap
import typing


def field_docs(cls) -> dict[str, str]:
    """name -> the docstring written under the field in the source of ``cls`` or of the dataclass it
    extends (the class that declares a field last wins)."""
    docs = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for statement, following in zip(body, body[1:]):
            if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def _scalar_type(annotation):
    """int, float, str or bool, unwrapping ``X | None``."""
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    return arguments[0] if arguments else annotation


def add_config_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per field of the dataclass ``cls`` (defaults from the class)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if item.name in skip:
            continue
        kind = _scalar_type(hints[item.name])
        flag = "--" + item.name.replace("_", "-")
        help_text = f"{docs.get(item.name, '')} (default: {item.default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=item.default,
                                help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=item.default, help=help_text,
                                dest=item.name)


def config_from_args(cls, args: argparse.Namespace, **overrides):
    """An instance of ``cls`` from the parsed options (validated by the class itself)."""
    values = {item.name: getattr(args, item.name) for item in dataclasses.fields(cls)
              if hasattr(args, item.name)}
    values.update(overrides)
    return cls(**values)


def _grid_value(annotation):
    """A converter of one command-line word to the field's type; ``none`` for an optional field."""
    kind = _scalar_type(annotation)
    optional = type(None) in typing.get_args(annotation)

    def convert(text: str):
        if optional and text.lower() == "none":
            return None
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
            return text.lower() == "true"
        try:
            return kind(text)
        except ValueError:
            expected = f"a {kind.__name__}" + (" or none" if optional else "")
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None

    return convert


def add_config_grid_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()
                              ) -> None:
    """One ``--field-name`` option per field of ``cls``, taking one or more values: a grid."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if item.name in skip:
            continue
        parser.add_argument(
            "--" + item.name.replace("_", "-"), nargs="+", type=_grid_value(hints[item.name]),
            default=[item.default], dest=item.name, metavar="VALUE",
            help=f"{docs.get(item.name, '')} (one or more values; default: {item.default})")


def config_grid_from_args(cls, args: argparse.Namespace, **overrides) -> list:
    """An instance of ``cls`` for every combination of the values given to its grid options, the
    last field varying fastest (each validated by the class itself)."""
    names = [item.name for item in dataclasses.fields(cls)
             if hasattr(args, item.name) and item.name not in overrides]
    return [cls(**dict(zip(names, values)), **overrides)
            for values in itertools.product(*(getattr(args, name) for name in names))]


def config_flags(config, named: tuple[str, ...] = (), grid: bool = False) -> list[str]:
    """The options that make ``config`` from its class's defaults: the ``named`` fields whatever
    their value, in that order, then every other field that differs from its default; for
    ``add_config_arguments`` (a bool as ``--field``/``--no-field``) or, with ``grid``, for
    ``add_config_grid_arguments`` (a bool as ``--field true``)."""
    flags = []
    fields = sorted(dataclasses.fields(config),
                    key=lambda item: named.index(item.name) if item.name in named else len(named))
    for item in fields:
        value = getattr(config, item.name)
        if value == item.default and item.name not in named:
            continue
        flag = "--" + item.name.replace("_", "-")
        if isinstance(value, bool) and not grid:
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return flags
