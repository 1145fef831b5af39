"""The contract every candidate generator keeps: what it is given and what it returns."""

from __future__ import annotations

from typing import Protocol

from recsys.context import Candidates, RequestContext


class Generator(Protocol):
    name: str  # travels to the response as the source of each item

    def generate(self, ctx: RequestContext, budget: int) -> Candidates: ...
