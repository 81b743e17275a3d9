"""The signature cache Beam's graph building goes through: same answers, asked once."""

from __future__ import annotations

import functools
import gc
import inspect
import weakref

import apache_beam as beam
from apache_beam.transforms import core, userstate

import streaming.sidecar.pipeline  # noqa: F401  (installs the cache)
from streaming.sidecar import beam_signatures
from streaming.sidecar.beam_signatures import PLAIN_SIGNATURE, cached_signature


class _Fn(beam.DoFn):
    def process(self, element: int, factor: int = 2) -> list[int]:
        return [element * factor]


def _plain(a: int, b: str = "x", *rest: int, key: bool = False) -> None: ...


def test_every_kind_of_callable_gets_the_signature_beam_would_compute() -> None:
    one, two = _Fn(), _Fn()
    callables = [
        _plain,
        lambda x, y=1: x,
        one.process,
        two.process,  # another instance: the cached bound signature fits it too
        _Fn,
        str.upper,  # Beam hints the first argument of a method descriptor
        functools.partial(_plain, 1),
        len,
    ]
    for func in callables:
        assert cached_signature(func) == PLAIN_SIGNATURE(func), func
        assert cached_signature(func) == PLAIN_SIGNATURE(func), func  # from the cache


def test_bound_and_unbound_forms_of_one_function_do_not_share_an_entry() -> None:
    assert "self" not in cached_signature(_Fn().process).parameters
    assert "self" in cached_signature(_Fn.process).parameters
    assert "self" not in cached_signature(_Fn().process).parameters


def test_a_function_no_longer_referenced_leaves_the_cache() -> None:
    def scoped(z: int) -> int:
        return z

    cached_signature(scoped)
    assert scoped in beam_signatures._functions
    gone = weakref.ref(scoped)
    size = len(beam_signatures._functions)
    del scoped
    gc.collect()
    assert gone() is None, "the cache kept the function alive"
    # at most: other entries of dead functions (earlier tests' graphs) may go in the same sweep
    assert len(beam_signatures._functions) <= size - 1


def test_beam_asks_through_the_cache_and_still_sees_state_and_arguments() -> None:
    assert core.get_signature is cached_signature
    args, defaults = core.get_function_arguments(_Fn(), "process")
    assert args == ["element", "factor"] and defaults == [2]

    count_state = beam.DoFn.StateParam(
        userstate.ReadModifyWriteStateSpec("count", beam.coders.VarIntCoder())
    )

    class Stateful(beam.DoFn):
        def process(self, element: int, count: object = count_state) -> list[int]:
            return [element]

    assert userstate.is_stateful_dofn(Stateful())
    assert not userstate.is_stateful_dofn(_Fn())
    beam_signatures.install()  # twice: still one level of caching
    assert core.get_signature is cached_signature
    assert inspect.signature(_plain) == cached_signature(_plain)
