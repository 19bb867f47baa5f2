"""Option groups: options that several commands take, declared once.

A group is a dataclass of Typer options (OptionGroup); a command decorated with
`with_option_groups` takes one parameter of the group's type and Typer sees the group's
options in its place, so `--help` and the command line are as if each command listed them.
`Connection` is the group of every command that reaches a cluster.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from odradek.cli.common import (
    BootstrapOption,
    Client,
    ClientPropertyOption,
    CommandConfigOption,
    connect,
)

R = TypeVar("R")


class OptionGroup:
    """Base of a dataclass of options that several commands take. A command decorated with
    `with_option_groups` declares one parameter of the dataclass's type (default OPTION_GROUP);
    Typer sees the dataclass's fields, in that parameter's place, as the command's options, and
    the command gets them as one instance."""


OPTION_GROUP: Any = object()  # the default of an OptionGroup parameter; never seen by a command


def with_option_groups(command: Callable[..., R]) -> Callable[..., R]:
    """The command with each OptionGroup parameter spread into its fields (see OptionGroup)."""
    signature = inspect.signature(command, eval_str=True)
    groups: dict[str, Any] = {}  # parameter name -> its OptionGroup dataclass
    params: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        group = param.annotation
        if not (isinstance(group, type) and issubclass(group, OptionGroup)):
            params.append(param)
            continue
        groups[param.name] = group
        hints = typing.get_type_hints(group, include_extras=True)
        params += [inspect.Parameter(f.name, param.kind, default=f.default, annotation=hints[f.name])
                   for f in dataclasses.fields(groups[param.name])]

    @functools.wraps(command)
    def run(**options: Any) -> R:
        for name, group in groups.items():
            options[name] = group(**{f.name: options.pop(f.name) for f in dataclasses.fields(group)})
        return command(**options)

    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params} | {"return": signature.return_annotation}
    return run


@dataclass(frozen=True)
class Connection(OptionGroup):
    """--bootstrap-server, --command-config and -X: how a command reaches the cluster."""

    bootstrap: str = BootstrapOption
    command_config: Path | None = CommandConfigOption
    client_property: list[str] | None = ClientPropertyOption

    def client(self) -> Client:
        """connect() of these options."""
        return connect(self.bootstrap, self.command_config, self.client_property)
