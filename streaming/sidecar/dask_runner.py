"""Beam's Dask runner, completed so the landing transform runs on a Dask cluster unchanged.

Beam 2.77 ships ``apache_beam.runners.dask.dask_runner.DaskRunner``: it turns a bounded
pipeline into Dask bags and submits them to a ``distributed`` scheduler. Five of its gaps
break :class:`~streaming.sidecar.pipeline.LandSpool` (measured on a real cluster):

1. a multi-output ``ParDo`` hands *all* its outputs, untagged, to every consumer (the carry
   sink received bronze tables: ``'ArrowRows' object is not iterable``);
2. it computes only the graph's last bag, so every other sink never runs;
3. it has no metrics (``metrics()`` raises), and the driver records the batch counters;
4. a ``ParDo`` gets its ``raw_side_inputs`` (the views, not placeholders), so a DoFn with a side
   input receives an ``AsList`` object instead of the list;
5. a side input is recomputed inside every task that reads it, and the client never closes.

:class:`SidecarDaskRunner` keeps Beam's own overrides (``Create``, ``GroupByKey``,
``Flatten``) and its bag model, and translates the leaf transforms itself: each ``ParDo``
task returns ``(tag, windowed value)`` pairs, and each consumer selects its tag; every
``ParDo`` gets its side inputs resolved and is computed (sinks included), and reports its
counters as data, so a task re-run after a worker loss replaces its counts instead of adding
to them; a side input is one shared graph node; the client is closed when the run ends.

Worker loss: Dask re-runs the lost tasks elsewhere, which is right for pure transforms but
would write a sink's files twice. The result therefore compares the cluster's membership
(the scheduler's worker-removal events, and the worker addresses) before and after the run
and raises :class:`WorkersLost` when a worker left; the driver then discards the staged
attempt and runs the batch again (see docs/scaling.md).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import dask.bag as db
from apache_beam import pvalue
from apache_beam.metrics.execution import MetricKey, MetricResult, MetricsContainer
from apache_beam.metrics.metric import MetricName, MetricResults, MetricsFilter
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import (
    DoFnContext,
    DoFnInvoker,
    DoFnSignature,
    Receiver,
    _OutputHandler,
)
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.dask.overrides import (
    _Create,
    _Flatten,
    _GroupByKeyOnly,
    _Reshuffle,
    dask_overrides,
)
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow, WindowFn
from apache_beam.utils.counters import CounterFactory
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from streaming.sidecar.options import ClusterUnavailable, WorkersLost

METRICS_TAG = "__sidecar_metrics__"
"""Tag of the one element per ``ParDo`` task that carries its counters."""
DEFAULT_CONNECT_TIMEOUT_S = 10
"""How long a run waits for the scheduler, and for a first worker (s)."""


def _global(value: Any) -> WindowedValue:
    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


class _Collect(Receiver):
    """Receives one output tag's windowed values into the task's shared output list."""

    def __init__(self, tag: str | None, out: list[tuple[str | None, Any]]) -> None:
        self.tag = tag
        self.out = out

    def receive(self, windowed_value: WindowedValue) -> None:
        self.out.append((self.tag, windowed_value))


class _Receivers(dict[str | None, _Collect]):
    def __init__(self, out: list[tuple[str | None, Any]]) -> None:
        super().__init__()
        self.out = out

    def __missing__(self, tag: str | None) -> _Collect:
        receiver = self[tag] = _Collect(tag, self.out)
        return receiver


@dataclass(frozen=True)
class _DoFnTask:
    """Everything a worker needs to run one ``ParDo`` over a partition (pickled per task)."""

    label: str
    fn: beam.DoFn
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    window_fn: WindowFn | None
    side_views: tuple[tuple[Any, dict[str, Any]], ...] = ()
    """(view class, view options) of each side input, in order."""

    def __call__(self, items: Iterable[WindowedValue], *sides: list[Any]) -> list[Any]:
        out: list[tuple[str | None, Any]] = []
        receivers = _Receivers(out)
        handler = _OutputHandler(
            window_fn=self.window_fn,
            main_receivers=receivers[None],
            tagged_receivers=receivers,
            per_element_output_counter=None,
            output_batch_converter=None,
            process_yields_batches=False,
            process_batch_yields_elements=False,
        )
        side_inputs = [
            SideInputMap(view, options, values)
            for (view, options), values in zip(self.side_views, sides, strict=True)
        ]
        invoker = DoFnInvoker.create_invoker(
            DoFnSignature(self.fn),
            handler,
            context=DoFnContext(self.label, state=None),
            side_inputs=side_inputs,
            input_args=list(self.args),
            input_kwargs=dict(self.kwargs),
            user_state_context=None,
            bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
        )
        # Beam's counters find their container through the thread's state sampler.
        container = MetricsContainer(self.label)
        sampler = statesampler.StateSampler("", CounterFactory())
        previous = statesampler.get_current_tracker()
        statesampler.set_current_tracker(sampler)
        try:
            with sampler.scoped_state(self.label, "process", metrics_container=container):
                invoker.invoke_setup()
                invoker.invoke_start_bundle()
                for item in items:
                    invoker.invoke_process(item)
                invoker.invoke_finish_bundle()
                invoker.invoke_teardown()
        finally:
            statesampler.set_current_tracker(previous)
        counters = {
            (self.label, key.metric.namespace, key.metric.name): int(value)
            for key, value in container.get_cumulative().counters.items()
        }
        out.append((METRICS_TAG, counters))
        return out


def _select(items: Iterable[tuple[str | None, Any]], tag: str | None) -> list[Any]:
    return [value for item_tag, value in items if item_tag == tag]


def _group_key(item: WindowedValue) -> Any:
    return item.value[0]


def _grouped(group: tuple[Any, list[WindowedValue]]) -> WindowedValue:
    """``GroupByKeyOnly``: (key, reified values), as ``GroupAlsoByWindow`` expects them."""
    key, items = group
    return _global((key, [item.value[1] for item in items]))


def _as_list(part: Iterable[Any]) -> list[Any]:
    return list(part)


def _concat(parts: Iterable[list[Any]]) -> list[Any]:
    return list(itertools.chain.from_iterable(parts))


@dataclass
class _Translator(PipelineVisitor):
    """Beam leaf transforms → Dask bags (composites are visited through their leaves)."""

    npartitions: int | None = None
    bags: dict[AppliedPTransform, db.Bag] = field(default_factory=dict)
    tagged: set[AppliedPTransform] = field(default_factory=set)
    pardos: list[db.Bag] = field(default_factory=list)

    def bag_of(self, pcoll: pvalue.PCollection) -> db.Bag:
        producer: Any = pcoll.producer
        bag = self.bags[producer]
        if producer in self.tagged:
            return bag.map_partitions(_select, pcoll.tag)
        return bag

    def visit_transform(self, node: AppliedPTransform) -> None:
        transform = node.transform
        inputs = [self.bag_of(p) for p in node.inputs if not isinstance(p, pvalue.PBegin)]
        if isinstance(transform, _Create):
            values = [_global(v) for v in transform.values]
            parts = max(1, min(len(values), self.npartitions or 1))
            bag = db.from_sequence(values, npartitions=parts)
        elif isinstance(transform, beam.ParDo):
            bag = self._pardo(node, inputs[0])
        elif isinstance(transform, _GroupByKeyOnly):
            bag = inputs[0].groupby(_group_key, shuffle="tasks").map(_grouped)
        elif isinstance(transform, _Flatten):
            bag = db.concat(inputs) if inputs else db.from_sequence([], npartitions=1)
        elif isinstance(transform, _Reshuffle):
            bag = inputs[0]
        else:
            raise NotImplementedError(
                f"{node.full_label}: {type(transform).__name__} has no Dask translation"
            )
        self.bags[node] = bag

    def _pardo(self, node: AppliedPTransform, main: db.Bag) -> db.Bag:
        transform: Any = node.transform
        # ``args``/``kwargs`` hold placeholders where the side inputs go (not the raw views).
        args, kwargs = transform.args or (), transform.kwargs or {}
        main_input = next(iter(node.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        sides = [self.bag_of(si.pvalue).reduction(_as_list, _concat) for si in node.side_inputs]
        task = _DoFnTask(
            node.full_label,
            transform.fn,
            tuple(args),
            dict(kwargs),
            window_fn,
            tuple((type(si), si._view_options()) for si in node.side_inputs),
        )
        bag = main.map_partitions(task, *sides)
        self.tagged.add(node)
        self.pardos.append(bag)
        return bag


class _CounterResults(MetricResults):
    """The run's counters, summed over tasks (``query`` as on the other runners)."""

    def __init__(self, counters: dict[tuple[str, str, str], int]) -> None:
        self.counters = counters

    def query(self, filter: MetricsFilter | None = None) -> dict[str, list[MetricResult]]:
        found = []
        for (step, namespace, name), value in sorted(self.counters.items()):
            key = MetricKey(step, MetricName(namespace, name))
            if self.matches(filter, key):
                found.append(MetricResult(key, value, value))
        return {self.COUNTERS: found, self.DISTRIBUTIONS: [], self.GAUGES: []}


class DaskLandingResult(PipelineResult):
    """A submitted run: waits, gathers the counters, checks no worker left, closes the client."""

    def __init__(self, client: Any, futures: Sequence[Any], workers: _Membership) -> None:
        super().__init__(PipelineState.RUNNING)
        self.client = client
        self.futures = futures
        self.workers = workers
        self.counters: dict[tuple[str, str, str], int] = defaultdict(int)

    def wait_until_finish(self, duration: int | None = None) -> str:
        """Block until done (``duration`` in ms, as Beam's other runners take it)."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        try:
            timeout = None if duration is None else duration / 1000
            for future in self.futures:
                part = future.result(timeout=timeout)
                for counts in part:
                    for key, value in counts.items():
                        self.counters[key] += value
            lost = self.workers.lost_since(_Membership.of(self.client))
        except KilledWorker as exc:
            self._state = PipelineState.FAILED
            raise ClusterUnavailable(f"Dask workers kept dying: {exc}") from exc
        except (OSError, TimeoutError, FutureCancelledError) as exc:  # the scheduler went away
            self._state = PipelineState.FAILED
            raise ClusterUnavailable(f"lost the Dask scheduler: {exc}") from exc
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self.client.close()
        if lost:
            self._state = PipelineState.FAILED
            raise WorkersLost(f"Dask worker(s) left during the run: {', '.join(sorted(lost))}")
        self._state = PipelineState.DONE
        return self._state

    def cancel(self) -> str:
        self.client.cancel(self.futures)
        self.client.close()
        self._state = PipelineState.CANCELLED
        return self._state

    def metrics(self) -> MetricResults:
        return _CounterResults(dict(self.counters))


@dataclass(frozen=True)
class _Membership:
    """Who is in the cluster: worker addresses, and the scheduler's worker-removal events.

    The scheduler logs every worker it removes (died, killed, timed out, restarted), so a
    removal event that is new after the run means a worker left during it — also one that
    joined after submission, or came back at the same address. The address set is a second
    witness should the event log be trimmed.
    """

    addresses: frozenset[str]
    removals: frozenset[tuple[float, str]]

    @classmethod
    def of(cls, client: Any) -> _Membership:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        events = client.get_events("all")
        return cls(
            frozenset(workers),
            frozenset(
                (float(at), str(event.get("worker")))
                for at, event in events
                if isinstance(event, dict) and event.get("action") == "remove-worker"
            ),
        )

    def lost_since(self, now: _Membership) -> set[str]:
        """Workers that left between this view and ``now``."""
        left = {worker for _, worker in now.removals - self.removals}
        return left | set(self.addresses - now.addresses)


class SidecarDaskRunner(PipelineRunner):
    """Runs a bounded pipeline on the Dask scheduler named by ``--dask_client_address``."""

    def run_pipeline(self, pipeline: beam.Pipeline, options: Any) -> DaskLandingResult:
        from distributed import Client

        dask_options = options.view_as(DaskOptions).get_all_options(
            drop_default=True, current_only=True
        )
        address = dask_options.get("address")
        if not address:
            raise ClusterUnavailable("no Dask scheduler address (--dask_client_address)")
        timeout = dask_options.get("timeout") or DEFAULT_CONNECT_TIMEOUT_S
        pipeline.replace_all(dask_overrides())
        translator = _Translator(npartitions=dask_options.get("npartitions"))
        pipeline.visit(translator)
        try:
            client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterUnavailable(f"Dask scheduler {address} unreachable: {exc}") from exc
        try:
            client.wait_for_workers(1, timeout=timeout)
            workers = _Membership.of(client)
            counters = [bag.map_partitions(_select, METRICS_TAG) for bag in translator.pardos]
            futures = client.compute(counters)
        except (OSError, TimeoutError) as exc:
            client.close()
            raise ClusterUnavailable(f"Dask cluster {address} has no workers: {exc}") from exc
        return DaskLandingResult(client, futures, workers)
