"""Named choices that every front end reads: head-reduction methods, normalisations, ...

A `Registry` maps a name to a function and a one-line summary. The CLI builds its choices and
help from it, the explorer its menus, the REST API its validation, so adding a method is one
function and one `@REGISTRY.register(...)` (docs/adding-a-method.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from attnstore.errors import InvalidArgument


@dataclass(frozen=True)
class Entry:
    name: str
    func: Callable
    summary: str  # one line: CLI help, explorer tooltips, docs
    label: str  # a short label for menus
    plot: Callable | None = None  # analyses: fn(result) -> matplotlib Figure
    options: tuple = ()  # analyses: the `Option`s its front ends offer (attnstore.analysis.studies.base)


class Registry(Mapping[str, Entry]):
    """An ordered name -> Entry table whose unknown names fail as InvalidArgument(param)."""

    def __init__(self, param: str):
        self.param = param  # the library parameter that takes these names (e.g. "method")
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, summary: str, label: str | None = None, plot: Callable | None = None, options: tuple = ()
    ) -> Callable[[Callable], Callable]:
        """Decorator: register `func` under `name` (a later registration of the same name replaces it)."""

        def add(func: Callable) -> Callable:
            self._entries[name] = Entry(name, func, summary, label or name, plot, tuple(options))
            return func

        return add

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def check(self, name: object) -> str:
        """`name` if registered, else InvalidArgument listing the choices."""
        if not isinstance(name, str) or name not in self._entries:
            raise InvalidArgument(self.param, f"must be one of {', '.join(self._entries)}, not {name!r}")
        return name

    def __getitem__(self, name: str) -> Entry:
        return self._entries[self.check(name)]

    def __contains__(self, name: object) -> bool:  # Mapping's would call __getitem__, which raises
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def help(self) -> str:
        """'a (summary) | b (summary)': the CLI's help text for this parameter."""
        return " | ".join(f"{e.name} ({e.summary})" for e in self._entries.values())
