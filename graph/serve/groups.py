"""Step groups: several steps in one deployment, calling each other in-process.

Knows how to build a step in this process from its spec (the same class its
own deployment would run, so batching, spans and metrics stay the step's),
and how to call it through a `DeploymentHandle`'s own interface
(`h.method.remote(...)`, `h.options(stream=True)`), so the pipeline's wiring
cannot tell a step in this process from one a hop away; knows nothing of what
the steps compute.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ray import serve

from graph.serve.deployments import (
    EmbedderDeployment,
    RerankerDeployment,
    RetrieverDeployment,
)
from graph.serve.generator_deployment import GeneratorDeployment

STEP_CLASSES: dict[str, Any] = {
    "embedder": EmbedderDeployment,
    "retriever": RetrieverDeployment,
    "reranker": RerankerDeployment,
    "generator": GeneratorDeployment,
}
#: Which step answers each method a group deployment is called with.
METHODS = {
    "embed": "embedder",
    "embed_with_usage": "embedder",
    "search": "retriever",
    "rerank": "reranker",
    "generate": "generator",
}


@dataclass(frozen=True)
class LocalRef:
    """An argument that is another step of the same group, in-process, by
    its deployment name (the artifact it serves)."""

    name: str


@dataclass
class StepSpec:
    """How to build one step: its node, deployment name and constructor args
    (plain data, or handles and `LocalRef`s), pickled into the replica."""

    node: str
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


async def build_step(spec: StepSpec, built: dict[str, LocalHandle]) -> LocalHandle:
    """Construct `spec`'s step class here (awaiting an async constructor as
    Serve does), its `LocalRef` arguments taken from the steps `built` (by
    deployment name)."""
    cls = STEP_CLASSES[spec.node].func_or_class
    args = [built[a.name] if isinstance(a, LocalRef) else a for a in spec.args]
    step = cls.__new__(cls)
    started = step.__init__(*args, **spec.kwargs)
    if inspect.isawaitable(started):
        await started
    return LocalHandle(step, spec.name)


async def build_steps(specs: list[StepSpec]) -> dict[str, LocalHandle]:
    """Every step of `specs`, by deployment name, in the order given (the
    steps a `LocalRef` names must come before it)."""
    built: dict[str, LocalHandle] = {}
    for spec in specs:
        built[spec.name] = await build_step(spec, built)
    return built


class LocalHandle:
    """A step in this process, called as its deployment's handle would be."""

    def __init__(self, step: Any, name: str, stream: bool = False) -> None:
        self.step = step
        self.deployment_name = name
        self._stream = stream

    def options(self, stream: bool = False, **_: Any) -> LocalHandle:
        return LocalHandle(self.step, self.deployment_name, stream)

    def __getattr__(self, method: str) -> _LocalMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _LocalMethod(getattr(self.step, method), self._stream, self)


@dataclass
class _LocalMethod:
    fn: Any
    stream: bool
    handle: LocalHandle

    @property
    def deployment_name(self) -> str:
        return self.handle.deployment_name

    def remote(self, *args: Any) -> Any:
        if self.stream:
            return _LocalStream(self.fn(*args))
        # A task: awaitable once, cancellable, like a DeploymentResponse.
        return asyncio.ensure_future(self.fn(*args))


class _LocalStream:
    """An in-process stream with a `DeploymentResponseGenerator`'s cancel()."""

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self._stream = stream
        self._closing: asyncio.Future[Any] | None = None

    def __aiter__(self) -> _LocalStream:
        return self

    async def __anext__(self) -> Any:
        return await anext(self._stream)

    def cancel(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            self._closing = asyncio.ensure_future(close())


@serve.deployment
class StepGroupDeployment:
    """Several steps in one replica; each call goes to the step that has it."""

    async def __init__(self, specs: list[StepSpec]) -> None:  # type: ignore[misc]
        built = await build_steps(specs)
        self.steps = {spec.node: built[spec.name] for spec in specs}

    def _step(self, method: str) -> Any:
        node = METHODS[method]
        if node not in self.steps:
            raise RuntimeError(f"this step group holds no {node} ({method})")
        return self.steps[node].step

    async def embed(self, *args: Any) -> Any:
        return await self._step("embed").embed(*args)

    async def embed_with_usage(self, *args: Any) -> Any:
        return await self._step("embed_with_usage").embed_with_usage(*args)

    async def search(self, *args: Any) -> Any:
        return await self._step("search").search(*args)

    async def rerank(self, *args: Any) -> Any:
        return await self._step("rerank").rerank(*args)

    async def generate(self, *args: Any) -> AsyncIterator[Any]:
        async for batch in self._step("generate").generate(*args):
            yield batch

    async def describe(self) -> dict[str, Any]:
        """The embedder's description when the group has one (the retriever
        of another group checks its index against it), else the first step's."""
        first = self.steps.get("embedder") or next(iter(self.steps.values()))
        result: dict[str, Any] = await first.step.describe()
        return result

    async def stats(self) -> list[dict[str, Any]]:
        return [await h.step.stats() for h in self.steps.values()]

    async def readiness(self) -> str:
        for handle in self.steps.values():
            state = str(await handle.step.readiness())
            if state != "ready":
                return f"{handle.step.node}: {state}"
        return "ready"

    async def check_health(self) -> None:
        for handle in self.steps.values():
            check = getattr(handle.step, "check_health", None)
            if check is not None:
                await check()

    def __del__(self) -> None:
        for handle in getattr(self, "steps", {}).values():
            closer = getattr(type(handle.step), "__del__", None)
            if closer is not None:
                closer(handle.step)
