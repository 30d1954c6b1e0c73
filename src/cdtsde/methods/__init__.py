"""The method registry: one line per method, name -> "module:class" (imported only when used).

Adding a method = one folder under `cdtsde/methods/` with a `Method` subclass (cdtsde.methods.base) +
one line here (docs/methods.md).
"""

from __future__ import annotations

import importlib

from ..errors import CdtsdeError
from .base import DATA_KINDS, DataInfo, Method, TranslationOutput

REGISTRY: dict[str, str] = {
    "cdtsde": "cdtsde.methods.cdtsde:CDTSDE",
    "bbdm": "cdtsde.methods.bbdm:BBDM",
    "dbim": "cdtsde.methods.dbim:DBIM",
    "abridge": "cdtsde.methods.abridge:ABridge",
    "i2sb": "cdtsde.methods.i2sb:I2SB",
    "identity": "cdtsde.methods.identity:Identity",
    "pix2pix": "cdtsde.methods.pix2pix:Pix2Pix",
    "cyclegan": "cdtsde.methods.cyclegan:CycleGAN",
    "prior": "cdtsde.methods.prior:Prior",
    "sdedit": "cdtsde.methods.sdedit:SDEdit",
    "lmi": "cdtsde.methods.lmi:LMIGuided",
    "inversion": "cdtsde.methods.inversion:GANInversion",
}


def method_class(name: str) -> type[Method]:
    """The class registered under `name`; an unknown name is an error listing the registered ones."""
    if name not in REGISTRY:
        raise CdtsdeError(f"unknown method {name!r}; registered: {', '.join(REGISTRY)}")
    module, _, attribute = REGISTRY[name].partition(":")
    cls = getattr(importlib.import_module(module), attribute)
    if cls.name != name or cls.data_kind not in DATA_KINDS:
        raise TypeError(f"{REGISTRY[name]} must declare name = {name!r} and a data_kind in {DATA_KINDS}")
    return cls


def method_classes() -> list[type[Method]]:
    return [method_class(name) for name in REGISTRY]


__all__ = ["REGISTRY", "DataInfo", "Method", "TranslationOutput", "method_class", "method_classes"]
