"""Beam's signature look-ups, made once per function instead of once per question.

While it builds and runs a graph, Beam asks ``inspect.signature`` about the same functions
again and again: every check for state and timers (``userstate.get_dofn_specs``, about 80
times per micro-batch graph here, and again as bundles are scheduled) wraps *every* method
of the DoFn and inspects its parameters. That was ~45 % of the CPU a small micro-batch's
pipeline costs on the in-process runner (0.21 → 0.12 s per batch of 200 chunks, measured
in one process), a fixed cost each batch pays whatever its size.

A function's signature does not change, so :func:`install` routes Beam's
``get_signature`` through a cache keyed weakly by the function (by the underlying function
for a bound method: every instance's bound method has the same signature, ``self``
dropped). A function that is no longer referenced leaves the cache with it. What Beam
computes from a signature is unchanged; the signature object is immutable.
"""

from __future__ import annotations

import inspect
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from apache_beam.transforms import core, ptransform, util
from apache_beam.typehints import decorators

PLAIN_SIGNATURE: Callable[[Any], inspect.Signature] = decorators.get_signature
"""Beam's own ``get_signature``: what the cache asks on a miss."""
_MODULES = (decorators, core, ptransform, util)
"""Every module that calls ``get_signature`` by a name of its own (``from … import``)."""

_functions: weakref.WeakKeyDictionary[Any, inspect.Signature] = weakref.WeakKeyDictionary()
_methods: weakref.WeakKeyDictionary[Any, inspect.Signature] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def cached_signature(func: Any) -> inspect.Signature:
    """Beam's ``get_signature(func)``, computed once per function (see the module)."""
    if isinstance(func, types.MethodType):
        key, cache = func.__func__, _methods
    else:
        key, cache = func, _functions
    try:
        return cache[key]
    except (KeyError, TypeError):  # TypeError: not weakly referable or not hashable
        pass
    signature = PLAIN_SIGNATURE(func)
    try:
        with _lock:
            cache[key] = signature
    except TypeError:
        pass
    return signature


def install() -> None:
    """Route Beam's signature look-ups through :func:`cached_signature` (idempotent)."""
    for module in _MODULES:
        setattr(module, "get_signature", cached_signature)  # noqa: B010 (untyped module)
