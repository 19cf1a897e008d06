"""Island pools: the one parallel seam. ``LocalPool`` runs islands in-process; ``RayPool``
runs each island as a named Ray actor (``island-0``, ``island-1``, ...), or, with
``runtime.ray.actors`` below the number of islands, several islands per actor
(``islands-0``, ``islands-1``, ...: island i on actor i mod actors, stepped one after another).

Both expose ``submit(method, args_per_island) -> handles``, ``collect(handles) -> list``
(``call`` is the two in one), ``drain(handles)`` and ``restore(states)``. A handle can be
passed as an argument of a later ``submit`` (Ray resolves it). Calls to one island run in the
order they were submitted, so the driver can queue up to ``lookahead`` generations ahead
(``RayPool``; ``LocalPool`` runs a call when it is submitted and has no lookahead). A pool
raises :class:`IslandLost` when an island died mid-call; the driver then waits for every call
still queued (``drain``), restores every island from the last checkpoint and replays from the
generation it lost (deterministic, so the result does not change). Ray restarts a dead actor
(``max_restarts``); ``restore`` waits for it.

Only entry points call ``ray.init``: ``RayPool`` expects Ray to be initialized.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from evolution.config import EvolutionConfig
from evolution.island import Island, IslandStateError


class IslandLost(RuntimeError):
    """An island actor died during a call; its in-memory state is gone."""


class _Pool:
    lookahead = 0

    def submit(self, method: str, args: Sequence[tuple]) -> list:
        raise NotImplementedError

    def collect(self, handles: Sequence[Any]) -> list:
        raise NotImplementedError

    def call(self, method: str, args: Sequence[tuple]) -> list:
        """``method`` on every island with its own arguments; their answers in island order."""
        return self.collect(self.submit(method, args))


class LocalPool(_Pool):
    """In-process twin of :class:`RayPool` (unit tests, ``runtime.backend: local``)."""

    def __init__(self, config: EvolutionConfig, market: Any, folds: np.ndarray):
        self.islands = [Island(i, config, market, folds) for i in range(config.islands)]

    def submit(self, method: str, args: Sequence[tuple]) -> list:
        return [getattr(island, method)(*a) for island, a in zip(self.islands, args)]

    def collect(self, handles: Sequence[Any]) -> list:
        return list(handles)

    def drain(self, handles: Sequence[Any]) -> None:
        pass  # every call ran when it was submitted

    def restore(self, states: Sequence[dict | None]) -> None:
        for island, state in zip(self.islands, states):
            island.restore(state)

    def nodes(self) -> list[str]:
        return ["local"] * len(self.islands)

    def close(self) -> None:
        self.islands = []


def _actor_class():
    import ray

    @ray.remote
    class RayIsland(Island):
        """An :class:`Island` as a Ray actor. The market comes through the object store in
        ``attach`` (the first call the pool queues, and again in ``RayPool.restore`` after Ray
        restarted the actor), not in the constructor: Ray re-runs a constructor on restart
        with references it does not keep alive, and says so on the terminal of every run
        (core_worker.cc "... max_restarts > 0"). Until attached, every call raises
        :class:`IslandStateError`, as an island restarted empty does."""

        def __init__(self, index: int, config: EvolutionConfig, folds: np.ndarray):
            self._pending = (index, config, folds)

        def __getattr__(self, name: str):
            if name.startswith("__") or "_pending" not in self.__dict__:
                raise AttributeError(name)
            raise IslandStateError(f"island {self._pending[0]} has no market yet (restarted): restore it")

        def attach(self, market: Any) -> int:
            if "market" not in self.__dict__:
                index, config, folds = self._pending
                Island.__init__(self, index, config, market, folds)
            return self.index

        def node_id(self) -> str:
            return ray.get_runtime_context().get_node_id()

    return RayIsland


def _host_class():
    import ray

    from backtest import Evaluator

    @ray.remote
    class RayIslands:
        """Several islands in one actor (``runtime.ray.actors`` < islands). ``call`` runs one
        method on each of its islands in turn and returns one object per island (the pool asks
        for that many returns), so each island's answer is its own object, as with
        :class:`RayIsland`. The market comes in ``attach``, as there."""

        def __init__(self, indices: list[int], config: EvolutionConfig, folds: np.ndarray):
            self._pending = (list(indices), config, folds)
            self.islands: dict[int, Island] = {}

        def attach(self, market: Any) -> list[int]:
            if not self.islands:
                indices, config, folds = self._pending
                evaluator = Evaluator(memory_bytes=config.evaluator_memory_mb * 2**20)
                self.islands = {i: Island(i, config, market, folds, evaluator) for i in indices}
            return list(self.islands)

        def call(self, method: str, indices: list[int], arity: int, *flat_args: Any):
            """``method`` on islands ``indices``, island k with ``flat_args[k * arity:(k + 1) * arity]``
            (flat, so Ray resolves the object references among them)."""
            if not self.islands:
                raise IslandStateError(f"islands {self._pending[0]} have no market yet (restarted): restore them")
            out = [getattr(self.islands[i], method)(*flat_args[k * arity:(k + 1) * arity])
                   for k, i in enumerate(indices)]
            return out[0] if len(out) == 1 else tuple(out)

        def node_id(self) -> str:
            return ray.get_runtime_context().get_node_id()

    return RayIslands


class RayPool(_Pool):
    """Named island actors; the market is ``ray.put`` once and shared by reference."""

    def __init__(self, config: EvolutionConfig, market: Any, folds: np.ndarray, market_ref: Any = None):
        import ray

        if not ray.is_initialized():
            raise RuntimeError("RayPool needs an initialized Ray: call ray.init() in the entry point first")
        rc = config.runtime.ray
        self._ray = ray
        self.market_ref = market_ref if market_ref is not None else ray.put(market)
        options: dict[str, Any] = dict(num_cpus=rc.island_num_cpus, max_restarts=rc.max_restarts, max_task_retries=0)
        if rc.spread:
            options["scheduling_strategy"] = "SPREAD"
        self.lookahead = rc.lookahead
        self.actors = []
        n_actors = config.island_actors
        self.hosted = n_actors < config.islands
        # island i lives on actor i mod n_actors; self.hosts[k]: the islands of actor k, in order
        self.hosts = [list(range(k, config.islands, n_actors)) for k in range(n_actors)]
        cls = _host_class() if self.hosted else _actor_class()
        for k in range(n_actors):
            name = f"islands-{k}" if self.hosted else f"island-{k}"
            try:  # a leftover from an earlier run in this namespace would block the name
                ray.kill(ray.get_actor(name))
            except ValueError:
                pass
            first = self.hosts[k] if self.hosted else k
            actor = cls.options(name=name, **options).remote(first, config, folds)
            actor.attach.remote(self.market_ref)  # calls to an actor run in order: before any step
            self.actors.append(actor)

    def submit(self, method: str, args: Sequence[tuple]) -> list:
        if not self.hosted:
            return [getattr(actor, method).remote(*a) for actor, a in zip(self.actors, args)]
        handles: list[Any] = [None] * len(args)
        for k, indices in enumerate(self.hosts):
            for i, ref in zip(indices, self.submit_to(k, method, [args[i] for i in indices])):
                handles[i] = ref
        return handles

    def collect(self, handles: Sequence[Any]) -> list:
        ray = self._ray
        try:
            return ray.get(list(handles))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.ObjectLostError,
                IslandStateError) as error:
            # IslandStateError: an actor restarted by Ray (empty) answered; ObjectLostError: a
            # result computed ahead (lookahead) sat in the object store of a node that is gone;
            # same remedy
            raise IslandLost(str(error)) from error

    def drain(self, handles: Sequence[Any], timeout_s: float = 300.0) -> None:
        """Wait until every queued call has finished or failed, so none of them can run on an
        island after it is restored (a call queued for a restarted actor would otherwise)."""
        refs = list(handles)
        if refs:
            self._ray.wait(refs, num_returns=len(refs), timeout=timeout_s)

    def restore(self, states: Sequence[dict | None], timeout_s: float = 300.0) -> None:
        """Push checkpointed states into every island, waiting for restarted actors."""
        ray = self._ray
        deadline = time.monotonic() + timeout_s
        for k, actor in enumerate(self.actors):
            while True:
                try:
                    actor.attach.remote(self.market_ref)  # a restarted actor has none
                    if self.hosted:
                        ray.get(self.submit_to(k, "restore", [(states[i],) for i in self.hosts[k]]))
                    else:
                        ray.get(actor.restore.remote(states[k]))
                    break
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    def submit_to(self, k: int, method: str, args: Sequence[tuple]) -> list:
        """``method`` on the islands of hosting actor k (args in their order); a list of handles."""
        indices = self.hosts[k]
        flat = [x for a in args for x in a]
        refs = self.actors[k].call.options(num_returns=len(indices)).remote(method, indices, len(args[0]), *flat)
        return list(refs) if len(indices) > 1 else [refs]

    def nodes(self) -> list[str]:
        """The node of each island (its actor's)."""
        actor_nodes = self._ray.get([a.node_id.remote() for a in self.actors])
        return [actor_nodes[i % len(self.actors)] for i in range(sum(map(len, self.hosts)))]

    def close(self) -> None:
        for actor in self.actors:
            try:
                self._ray.kill(actor)
            except Exception:  # pragma: no cover - already gone
                pass
        self.actors = []
