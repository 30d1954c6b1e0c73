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
    """Add every registered method's sampling options to `parser`: an option of one name has one type in
    every method, and accepts the union of the methods' choices (each method's own are checked against the
    loaded method by `chosen_sampling`)."""
    from ..methods import method_classes

    flags: dict[str, dict] = {}  # option name -> what the first method to declare it says, choices merged
    for cls in method_classes():
        hints = typing.get_type_hints(cls.sampling_class)
        for option in dataclasses.fields(cls.sampling_class):
            hint = hints[option.name]
            if option.name in reserved:
                raise TypeError(f"{cls.name}: sampling option {option.name!r} clashes with a command flag")
            seen = flags.setdefault(option.name, {"type": hint, "method": cls.name, "option": option, "choices": []})
            if seen["type"] != hint:
                raise TypeError(f"sampling option {option.name!r} is {hint} in {cls.name} but "
                                f"{seen['type']} in {seen['method']}")
            choices = option.metadata.get("choices")
            if choices is None or seen["choices"] is None:  # one method takes any value: so must the flag
                seen["choices"] = None
            else:
                seen["choices"] += [choice for choice in choices if choice not in seen["choices"]]
    group = parser.add_argument_group("sampling options (default: the checkpoint's; `cdtsde methods` lists "
                                      "which method has which)")
    for name, seen in flags.items():
        option = seen["option"]
        kwargs = {"dest": PREFIX + name, "default": None, "metavar": name.upper(),
                  "help": f"{option.metadata.get('help', name)} ({seen['method']} default: {option.default})"}
        if seen["type"] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=seen["type"], choices=seen["choices"])
        group.add_argument(flag(name), **kwargs)


def chosen_sampling(args: argparse.Namespace, method) -> dict:
    """The sampling options given on the command line, checked against `method`'s names and choices."""
    chosen = {key[len(PREFIX):]: value for key, value in vars(args).items()
              if key.startswith(PREFIX) and value is not None}
    options = {option.name: option for option in dataclasses.fields(method.sampling_class)}
    unknown = [flag(name) for name in chosen if name not in options]
    if unknown:
        have = ", ".join(flag(name) for name in sorted(options)) or "none"
        raise CdtsdeError(f"the {method.name} method has no sampling option {', '.join(unknown)} (its options: {have})")
    for name, value in chosen.items():
        choices = options[name].metadata.get("choices")
        if choices is not None and value not in choices:
            raise CdtsdeError(f"the {method.name} method's {flag(name)} must be one of "
                              f"{', '.join(map(str, choices))}, got {value!r}")
    return chosen
