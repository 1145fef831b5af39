"""Session models as candidate generators (issue "Streaming session recommenders"): the
request's live session, the user's latest items oldest first (`RequestContext.sequence`:
what LogEvents brought, then the bundle's), scored over the catalogue by the model.

A generator whose model the bundle lacks (not named in sessions.models, or not trained yet)
answers nothing rather than failing the request; the ranking features read the same scores.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from candidates.base import register_generator
from candidates.session.live import LiveSSRM
from candidates.session.ssrm import SSRMModel, fit_ssrm
from recsys.arrays import NO_ITEMS, top_k
from recsys.components import Component, FitInputs, register_component
from recsys.config import Config
from recsys.context import Candidates, RequestContext

log = logging.getLogger(__name__)


class SessionGenerator:
    def __init__(self, name: str, live: LiveSSRM, als: Any) -> None:
        self.name = name
        self.live = live  # the weights in service, swapped by the updater's publications
        self.als = als  # candidates.als.ALSModel: the MF half's vectors

    def session_scores(self, ctx: RequestContext) -> np.ndarray | None:
        """(n_items,) scores of every catalogue item for this request, or None (no model,
        or no session); memoised per request for the ranking features."""
        model = self.live.model  # one reference for the request, whatever a swap does
        return ctx.remember((self.name, id(model)), lambda: self._scores(ctx, model))

    def _scores(self, ctx: RequestContext, model: SSRMModel | None) -> np.ndarray | None:
        if model is None or not len(ctx.sequence):
            return None
        session = ctx.sequence[: model.max_length][::-1]  # oldest first
        session = session[session < model.n_items]  # items newer than the model: unseen
        if not len(session):
            return None
        return model.scores(session, self.als.vector_of(ctx), self.als.item_factors)

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        if budget < 0:
            raise ValueError(f"{self.name}: budget must be >= 0, got {budget}")
        scores = self.session_scores(ctx)
        if scores is None:
            return Candidates(NO_ITEMS, np.empty(0, np.float32), self.name)
        scores = scores.copy()
        scores[ctx.sequence[ctx.sequence < len(scores)]] = -np.inf
        best = top_k(scores, budget)
        best = best[np.isfinite(scores[best])]
        return Candidates(best, scores[best], self.name)


def _fit(given: FitInputs) -> LiveSSRM:
    if "ssrm" not in given.config.sessions.models:
        return LiveSSRM(None)
    als = given.built["ials"]
    model, reservoir = fit_ssrm(
        given.data, als.item_factors, given.config.sessions, given.config.als
    )
    return LiveSSRM(model, reservoir)


def _make(bundle: Any, config: Config, name: str) -> SessionGenerator:
    if bundle.ssrm.model is None:
        log.warning("%s: the bundle has no SSRM model (sessions.models); it answers nothing", name)
    return SessionGenerator(name, bundle.ssrm, bundle.als.model)


register_component(
    Component(
        "ssrm",
        fit=_fit,
        load=lambda directory, config: LiveSSRM.load(directory),
        after=("ials",),
        absent=lambda: LiveSSRM(None),  # bundles from before session models
    )
)
register_generator("session_ssrm", _make)
