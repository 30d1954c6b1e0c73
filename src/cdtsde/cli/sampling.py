"""Command-line flags for sampling options: one flag per option of any registered method's sampling
dataclass (`--steps`, `--gamma`, ...). A flag left out keeps the checkpoint's default; a flag the loaded
method does not have is an error, never silently ignored."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from ..errors import CdtsdeError

PREFIX = "sampling_"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_sampling_flags(parser: argparse.ArgumentParser, reserved: set[str] = frozenset()) -> None:
    """Add every registered method's sampling options to `parser` (same name = same type across methods)."""
    from ..methods import method_classes

    seen: dict[str, tuple[object, str]] = {}
    group = parser.add_argument_group("sampling options (default: the checkpoint's; `cdtsde methods` lists "
                                      "which method has which)")
    for cls in method_classes():
        hints = typing.get_type_hints(cls.sampling_class)
        for option in dataclasses.fields(cls.sampling_class):
            hint = hints[option.name]
            if option.name in reserved:
                raise TypeError(f"{cls.name}: sampling option {option.name!r} clashes with a command flag")
            if option.name in seen:
                if seen[option.name][0] != hint:
                    raise TypeError(f"sampling option {option.name!r} is {hint} in {cls.name} but "
                                    f"{seen[option.name][0]} in {seen[option.name][1]}")
                continue
            seen[option.name] = (hint, cls.name)
            kwargs = {"dest": PREFIX + option.name, "default": None, "metavar": option.name.upper(),
                      "help": f"{option.metadata.get('help', option.name)} ({cls.name} default: {option.default})"}
            if hint is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs.update(type=hint, choices=option.metadata.get("choices"))
            group.add_argument(flag(option.name), **kwargs)


def chosen_sampling(args: argparse.Namespace, method) -> dict:
    """The sampling options given on the command line, checked against `method`'s."""
    chosen = {key[len(PREFIX):]: value for key, value in vars(args).items()
              if key.startswith(PREFIX) and value is not None}
    known = {option.name for option in dataclasses.fields(method.sampling_class)}
    unknown = [flag(name) for name in chosen if name not in known]
    if unknown:
        have = ", ".join(flag(name) for name in sorted(known)) or "none"
        raise CdtsdeError(f"the {method.name} method has no sampling option {', '.join(unknown)} (its options: {have})")
    return chosen
