"""The model registry: ``register_model`` (a decorator for model factories), ``create_model`` and
``list_models``. Model modules (``ecgdx.models.seed_cnn`` ...) import ``register_model`` from here;
``ecgdx.models`` imports them, so that they register themselves, and re-exports this API
(``from ecgdx.models import create_model`` is the usual import).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

__all__ = ["create_model", "list_models", "register_model"]

_MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {}

# Kwargs that only say how the weights were initialised, not what the architecture is. They are
# recorded on the module as provenance (``pretrained_source``) but reset to None in
# ``ecgdx_config``: a checkpoint's own state_dict supersedes them, and rebuilding from a config must
# not depend on a weights file that may not exist on the machine that loads the checkpoint.
_INIT_ONLY_KWARGS: tuple[str, ...] = ("pretrained",)

# Every factory must accept these, so training code can build any model the same way.
_REQUIRED_KWARGS: tuple[str, ...] = ("num_classes", "in_chans")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory under ``name``.

    The wrapped factory stamps ``model.ecgdx_config = {"name": name, "kwargs": {...}}`` (every
    argument, defaults included, so the config stays valid if a default changes later) and
    ``model.pretrained_source`` (None unless the factory set it). Doing this here rather than in
    each factory keeps the bookkeeping identical for all models.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODEL_FACTORIES:
            raise ValueError(f"model name {name!r} is already registered")
        signature = inspect.signature(fn)
        missing = [k for k in _REQUIRED_KWARGS if k not in signature.parameters]
        if missing:
            raise TypeError(f"factory for {name!r} must accept {', '.join(missing)}")

        @functools.wraps(fn)
        def factory(**kwargs: Any) -> nn.Module:
            try:
                bound = signature.bind(**kwargs)
            except TypeError as exc:
                raise TypeError(f"bad arguments for model {name!r}: {exc}") from None
            bound.apply_defaults()
            model = fn(*bound.args, **bound.kwargs)
            config_kwargs = dict(bound.arguments)
            for key in _INIT_ONLY_KWARGS:
                if key in config_kwargs:
                    config_kwargs[key] = None
            model.ecgdx_config = {"name": name, "kwargs": config_kwargs}
            if not hasattr(model, "pretrained_source"):
                model.pretrained_source = None
            return model

        _MODEL_FACTORIES[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODEL_FACTORIES)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    ``create_model(**model.ecgdx_config)`` also works: a ``kwargs`` mapping is unpacked into the
    factory's arguments (explicit keyword arguments win), so a checkpoint's stored config rebuilds
    the model without special casing. Unknown names raise ValueError listing the known ones.
    """
    if name not in _MODEL_FACTORIES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    nested = kwargs.pop("kwargs", None)
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise TypeError(f"'kwargs' must be a mapping, got {type(nested).__name__}")
        kwargs = {**nested, **kwargs}
    return _MODEL_FACTORIES[name](**kwargs)
