"""Session models as candidate generators (issue "Streaming session recommenders"): the
request's live session, the user's latest items oldest first (`RequestContext.sequence`:
what LogEvents brought, then the bundle's), scored over the catalogue by the model.

Each model named in sessions.models is a bundle component and the model of the generator
"session_<model>"; the ranking features score every candidate with the same memoised scores
("<model>_score") where the funnel serves that generator (`served_session_generators`).
A generator whose model the bundle lacks (not named in sessions.models, or not trained yet)
answers nothing rather than failing the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from candidates.base import register_generator
from candidates.session.gag import GAGModel, fit_gag_on
from candidates.session.live import LiveSSRM
from candidates.session.mgia import MGIAModel, fit_mgia_on
from candidates.session.ssrm import SSRMModel, fit_ssrm
from recsys.arrays import NO_ITEMS, top_k
from recsys.components import Component, FitInputs, register_component
from recsys.config import Config
from recsys.context import Candidates, RequestContext

log = logging.getLogger(__name__)

PREFIX = "session_"


class SessionGenerator:
    """The catalogue scored for the request's live session by `score(ctx, model)`, the
    model read from `model_of()` once per request (the updater may swap it)."""

    def __init__(
        self,
        name: str,
        model_of: Callable[[], Any],
        score: Callable[[RequestContext, Any], np.ndarray | None],
    ) -> None:
        self.name = name
        self.model_of = model_of
        self.score = score

    def session_scores(self, ctx: RequestContext) -> np.ndarray | None:
        """(n_items,) scores of every catalogue item for this request, or None (no model,
        or no session); memoised per request for the ranking features."""
        model = self.model_of()  # one reference for the request, whatever a swap does
        if model is None or not len(ctx.sequence):
            return None
        return ctx.remember((self.name, id(model)), lambda: self.score(ctx, model))

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


def _session_of(ctx: RequestContext, model: Any) -> np.ndarray | None:
    """The live session for `model`: the latest max_length items, oldest first, those the
    model knows (items newer than it are unseen); None if none is left."""
    session = ctx.sequence[: model.max_length][::-1]
    session = session[session < model.n_items]
    return session if len(session) else None


def ssrm_generator(bundle: Any, name: str = PREFIX + "ssrm") -> SessionGenerator:
    live, als = bundle.ssrm, bundle.als.model

    def score(ctx: RequestContext, model: SSRMModel) -> np.ndarray | None:
        session = _session_of(ctx, model)
        if session is None:
            return None
        return model.scores(session, als.vector_of(ctx), als.item_factors)

    return SessionGenerator(name, lambda: live.model, score)


def _graph_model_score(ctx: RequestContext, model: GAGModel) -> np.ndarray | None:
    session = _session_of(ctx, model)
    return None if session is None else model.session_scores(session, ctx.user_index)


def graph_generator(model_name: str) -> Callable[..., SessionGenerator]:
    """The generator of a GAG or MGIA bundle component."""

    def make(bundle: Any, name: str = PREFIX + model_name) -> SessionGenerator:
        model = getattr(bundle, model_name)
        return SessionGenerator(name, lambda: model, _graph_model_score)

    return make


# the graph models: component name -> (fitting from the nightly's data, the model's class)
GRAPH_MODELS = {"gag": (fit_gag_on, GAGModel), "mgia": (fit_mgia_on, MGIAModel)}
# model name -> its generator over a loaded bundle ("session_<model>")
SESSION_GENERATORS: dict[str, Callable[..., SessionGenerator]] = {
    "ssrm": ssrm_generator,
    **{name: graph_generator(name) for name in GRAPH_MODELS},
}


def served_session_generators(
    bundle: Any, generator_names: tuple[str, ...]
) -> dict[str, SessionGenerator]:
    """Model name -> generator, for the session generators the funnel serves and the bundle
    holds (bundles from before session models have none)."""
    return {
        model: make(bundle)
        for model, make in SESSION_GENERATORS.items()
        if PREFIX + model in generator_names and model in bundle.parts
    }


def _fit_ssrm(given: FitInputs) -> LiveSSRM:
    if "ssrm" not in given.config.sessions.models:
        return LiveSSRM(None)
    als = given.built["ials"]
    model, reservoir = fit_ssrm(
        given.data, als.item_factors, given.config.sessions, given.config.als
    )
    return LiveSSRM(model, reservoir)


def _graph_component(name: str, fit_on: Callable, model_class: type[GAGModel]) -> Component:
    """A graph model as a bundle component: trained when sessions.models names it."""

    def fit(given: FitInputs) -> GAGModel | None:
        if name not in given.config.sessions.models:
            return None
        return fit_on(given.data, given.config.sessions)

    return Component(
        name,
        fit=fit,
        load=lambda directory, config: model_class.load(directory),
        absent=lambda: None,  # bundles from before it
    )


def _make(bundle: Any, config: Config, name: str) -> SessionGenerator:
    model = name.removeprefix(PREFIX)
    generator = SESSION_GENERATORS[model](bundle, name)
    if generator.model_of() is None:
        log.warning(
            "%s: the bundle has no %s model (sessions.models); it answers nothing", name, model
        )
    return generator


register_component(
    Component(
        "ssrm",
        fit=_fit_ssrm,
        load=lambda directory, config: LiveSSRM.load(directory),
        after=("ials",),
        absent=lambda: LiveSSRM(None),  # bundles from before session models
    )
)
for _name, (_fit_on, _model_class) in GRAPH_MODELS.items():
    register_component(_graph_component(_name, _fit_on, _model_class))
for _model in SESSION_GENERATORS:
    register_generator(PREFIX + _model, _make)
