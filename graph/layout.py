"""Which steps share a deployment (step groups), as config and as a plan.

Knows the layout's rules: each step in at most one group, the ingress
hosting the steps of its group in-process, a group's scaling taken from its
first member and its resources summed; knows nothing of Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NODES = ("embedder", "retriever", "reranker", "generator")
INGRESS = "ingress"
Member = Literal["ingress", "embedder", "retriever", "reranker", "generator"]

#: Every step in a deployment of its own: what a multi-GPU cluster runs.
SPLIT: list[list[str]] = []
#: The retrieval steps inside the ingress, the generator (its engine in a
#: process of its own) behind one handle hop.
SINGLE_BOX: list[list[str]] = [["ingress", "embedder", "retriever", "reranker"]]

PRESETS: dict[str, list[list[str]]] = {
    "split": SPLIT,
    "retrieval-in-ingress": SINGLE_BOX,
    # The single-box default (it measured best here: docs/performance.md):
    # every step in the ingress, vLLM's engine core in its own process.
    "single": [["generator", "ingress", "embedder", "retriever", "reranker"]],
}


class LayoutConfig(BaseModel):
    """Which steps share one deployment and call each other in-process."""

    model_config = ConfigDict(extra="forbid")

    groups: list[list[Member]] | None = Field(
        None,
        description="Step groups: each list is one deployment whose steps call "
        "each other in-process (no handle hop), e.g. [[ingress, embedder, "
        "retriever, reranker]]. A group with `ingress` runs inside the HTTP "
        "ingress. A step in no group gets a deployment of its own. The group "
        "takes the scaling and request limits (`deployments.<first member>`) "
        "of its first member and the sum of its members' CPUs, GPUs, memory and "
        "resources. Null: `preset`.",
    )
    preset: Literal["split", "retrieval-in-ingress", "single"] = Field(
        "single",
        description="The layout when `groups` is null: 'split' (every step its "
        "own deployment), 'retrieval-in-ingress' (embed, retrieve and rerank in "
        "the ingress; the generator its own), 'single' (all in the ingress, "
        "scaled as the generator).",
    )

    @field_validator("groups")
    @classmethod
    def _each_step_once(cls, groups: list[list[str]] | None) -> list[list[str]] | None:
        if groups is None:
            return None
        seen: set[str] = set()
        for group in groups:
            if not group:
                raise ValueError("layout.groups: a group must name at least one step")
            for member in group:
                if member in seen:
                    raise ValueError(
                        f"layout.groups: {member!r} is in more than one group"
                    )
                seen.add(member)
        return groups

    @model_validator(mode="after")
    def _retriever_reaches_its_embedder(self) -> LayoutConfig:
        # The retriever checks its index against the embedder at start-up: a
        # step inside the ingress has no handle another deployment could call.
        groups = self.resolved()
        home = {m: i for i, g in enumerate(groups) for m in g}
        embedder, retriever = home.get("embedder"), home.get("retriever")
        ingress = home.get(INGRESS)
        if embedder is not None and embedder == ingress and retriever != ingress:
            raise ValueError(
                "layout.groups: the embedder runs inside the ingress, so the "
                "retriever must too (it checks its index against the embedder)"
            )
        return self

    def resolved(self) -> list[list[str]]:
        """The groups in force (`groups`, else the preset's)."""
        groups = self.groups if self.groups is not None else PRESETS[self.preset]
        return [list(g) for g in groups]


@dataclass(frozen=True)
class Placement:
    """Where each step runs: in the ingress, or in a (group) deployment."""

    groups: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, layout: LayoutConfig) -> Placement:
        named = layout.resolved()
        placed = {m for g in named for m in g}
        alone = [[n] for n in NODES if n not in placed]
        groups = [g for g in named if g != [INGRESS]] + alone
        return cls(tuple(tuple(g) for g in groups))

    def group_of(self, node: str) -> tuple[str, ...]:
        for group in self.groups:
            if node in group:
                return group
        return (node,)

    def in_ingress(self, node: str) -> bool:
        """`node` runs inside the HTTP ingress (no handle hop to it)."""
        return INGRESS in self.group_of(node)

    def lead(self, node: str) -> str:
        """The member whose scaling the group of `node` takes."""
        return self.group_of(node)[0]

    def deployment_of(self, names: dict[str, str], node: str) -> str | None:
        """The deployment that serves `node`, given each node's own deployment
        name; None when it runs inside the ingress. A group's name joins its
        members' (`embedder+retriever+reranker`), so releases share a group
        exactly when they share every member."""
        group = self.group_of(node)
        if INGRESS in group:
            return None
        return "+".join(names[m] for m in sorted(group, key=NODES.index))

    def remote_groups(self) -> list[tuple[str, ...]]:
        """The groups that are deployments of their own (not the ingress)."""
        return [g for g in self.groups if INGRESS not in g]

    def describe(self) -> list[list[str]]:
        """The live layout as `/ready` and `config show` name it."""
        ingress = [list(g) for g in self.groups if INGRESS in g] or [[INGRESS]]
        return ingress + [list(g) for g in self.remote_groups()]
