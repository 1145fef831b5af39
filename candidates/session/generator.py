"""Session models as candidate generators (issue "Streaming session recommenders"): the
request's live session, scored over the catalogue by the model. The session is the user's
latest session: their latest items (`RequestContext.sequence`: what LogEvents brought, then
the bundle's), newest back to the first gap longer than sessions.timeout_seconds between
two of them (seed 003 §II: a session is one user's events with short gaps), at most the
model's max_length, oldest first. Without times (bundles from before them) the latest items
whatever their gaps.

Each model named in sessions.models is a bundle component and the model of the generator
"session_<model>"; the ranking features score every candidate with the same memoised scores
("<model>_score") where the funnel serves that generator (`served_session_generators`).
A generator whose model the bundle lacks (not named in sessions.models, or not trained yet)
answers nothing rather than failing the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from candidates.base import register_generator
from candidates.session.gag import GAGModel, fit_gag_on
from candidates.session.live import LiveModel
from candidates.session.mgia import MGIAModel, fit_mgia_on
from candidates.session.reservoir import SavedReservoir
from candidates.session.ssrm import SSRMModel, draw_reservoir, fit_ssrm
from recsys.arrays import NO_ITEMS, top_k
from recsys.components import Component, FitInputs, holds_no_items, register_component
from recsys.config import Config
from recsys.context import Candidates, RequestContext

log = logging.getLogger(__name__)

PREFIX = "session_"
RESERVOIR = "session_reservoir"  # the bundle component every session model's updates start from


@dataclass(frozen=True)
class SessionScoring:
    """What a model made of one request's session: item i scores table[i] · vector."""

    table: np.ndarray  # (n_items, d) float32: the model's item rows
    vector: np.ndarray  # (d,) float32: the session's

    def scores_of(self, items: np.ndarray) -> np.ndarray:
        return self.table[items] @ self.vector


@dataclass(frozen=True)
class _Proposable:
    """The rows of a model's table its generator may propose (items it learnt from a
    session), copied together so that a request reads only them."""

    model: Any  # kept so that the identities compared stay this model's and table's
    table: np.ndarray
    items: np.ndarray  # int64: item index of each row of `rows`
    rows: np.ndarray  # (len(items), d): table[items]
    position: np.ndarray  # int64 per item: its row in `rows`, -1 if not proposable

    @classmethod
    def of(cls, model: Any, table: np.ndarray) -> _Proposable:
        items = np.flatnonzero(model.known_items)
        position = np.full(len(table), -1, np.int64)
        position[items] = np.arange(len(items))
        return cls(model, table, items, np.ascontiguousarray(table[items]), position)


class SessionGenerator:
    """The catalogue scored for the request's live session by `score(session, ctx, model)`
    (the model's (table, vector)), the model read from `model_of()` once per request (the
    updater may swap it). It proposes only the items the model learnt from a session
    (`known_items`): the rest of its table learnt nothing but the softmax's push down, and on
    a large catalogue most items are never in a session (a 100k-item synthetic shop: 18%
    are), so a request reads a fraction of the table. The ranking feature scores any item."""

    def __init__(
        self,
        name: str,
        model_of: Callable[[], Any],
        score: Callable[[np.ndarray, RequestContext, Any], tuple[np.ndarray, np.ndarray]],
        timeout_seconds: int = 0,
    ) -> None:
        self.name = name
        self.model_of = model_of
        self.score = score  # (session, request, model) -> (item table, session vector)
        self.timeout_seconds = timeout_seconds  # 0: the latest items, whatever their gaps
        self._proposable: _Proposable | None = None  # of the latest model and table asked

    def scoring(self, ctx: RequestContext, model: Any = None) -> SessionScoring | None:
        """The request's session as `model` (default: the current one) scores it, or None
        (no model, or no session); memoised per request for the ranking features."""
        if model is None:
            model = self.model_of()  # one reference for the request, whatever a swap does
        if model is None or not len(ctx.sequence):
            return None
        return ctx.remember((self.name, id(model)), lambda: self._scoring(ctx, model))

    def _scoring(self, ctx: RequestContext, model: Any) -> SessionScoring | None:
        session = live_session(ctx, model.max_length, model.n_items, self.timeout_seconds)
        return None if session is None else SessionScoring(*self.score(session, ctx, model))

    def scores_of(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        """float32 score of each item for this request; NaN where there is none (no model,
        no session, or an item newer than the model)."""
        out = np.full(len(items), np.nan, np.float32)
        scoring = self.scoring(ctx)
        if scoring is not None:
            known = items < len(scoring.table)
            out[known] = scoring.scores_of(items[known])
        return out

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        if budget < 0:
            raise ValueError(f"{self.name}: budget must be >= 0, got {budget}")
        model = self.model_of()
        scoring = self.scoring(ctx, model)
        if scoring is None:
            return Candidates(NO_ITEMS, np.empty(0, np.float32), self.name)
        proposable = self._proposable_of(model, scoring.table)
        scores = proposable.rows @ scoring.vector
        seen = ctx.sequence[ctx.sequence < len(proposable.position)]
        seen = proposable.position[seen]
        scores[seen[seen >= 0]] = -np.inf
        best = top_k(scores, budget)
        best = best[np.isfinite(scores[best])]
        return Candidates(proposable.items[best], scores[best], self.name)

    def _proposable_of(self, model: Any, table: np.ndarray) -> _Proposable:
        kept = self._proposable  # one read: another thread may replace it meanwhile
        if kept is None or kept.model is not model or kept.table is not table:
            kept = _Proposable.of(model, table)
            self._proposable = kept
        return kept


def live_session(
    ctx: RequestContext, max_length: int, n_items: int, timeout_seconds: int
) -> np.ndarray | None:
    """The request's latest session, oldest first: its newest items back to the first gap
    longer than `timeout_seconds` (0, or no times: no cut), at most `max_length`, those a
    model of `n_items` items knows (items newer than it are unseen); None if none is left."""
    session = ctx.sequence[:max_length]
    times = ctx.sequence_times
    if timeout_seconds > 0 and times is not None and len(times) >= len(session) > 1:
        newest_first = times[: len(session)]
        gaps = np.flatnonzero(newest_first[:-1] - newest_first[1:] > timeout_seconds)
        if len(gaps):
            session = session[: gaps[0] + 1]
    session = session[::-1]
    session = session[session < n_items]
    return session if len(session) else None


def ssrm_generator(
    bundle: Any, name: str = PREFIX + "ssrm", timeout_seconds: int = 0
) -> SessionGenerator:
    live, als = bundle.ssrm, bundle.als.model

    def score(session: np.ndarray, ctx: RequestContext, model: SSRMModel):
        return model.scoring(session, als.vector_of(ctx), als.item_factors)

    return SessionGenerator(name, lambda: live.model, score, timeout_seconds)


def _graph_model_score(session: np.ndarray, ctx: RequestContext, model: GAGModel):
    return model.scoring(session, ctx.user_index)


def graph_generator(model_name: str) -> Callable[..., SessionGenerator]:
    """The generator of a GAG or MGIA bundle component."""

    def make(
        bundle: Any, name: str = PREFIX + model_name, timeout_seconds: int = 0
    ) -> SessionGenerator:
        live: LiveModel = getattr(bundle, model_name)
        return SessionGenerator(name, lambda: live.model, _graph_model_score, timeout_seconds)

    return make


# the graph models: component name -> (fitting from the nightly's data, the model's class)
GRAPH_MODELS = {"gag": (fit_gag_on, GAGModel), "mgia": (fit_mgia_on, MGIAModel)}
# model name -> how its weights load from a directory (None where none were saved)
MODEL_LOADERS: dict[str, Callable[[Path], Any]] = {
    "ssrm": SSRMModel.load,
    **{name: model_class.load for name, (_, model_class) in GRAPH_MODELS.items()},
}
# model name -> its generator over a loaded bundle ("session_<model>")
SESSION_GENERATORS: dict[str, Callable[..., SessionGenerator]] = {
    "ssrm": ssrm_generator,
    **{name: graph_generator(name) for name in GRAPH_MODELS},
}


def served_session_generators(
    bundle: Any, generator_names: tuple[str, ...], timeout_seconds: int = 0
) -> dict[str, SessionGenerator]:
    """Model name -> generator, for the session generators the funnel serves and the bundle
    holds (bundles from before session models have none)."""
    return {
        model: make(bundle, timeout_seconds=timeout_seconds)
        for model, make in SESSION_GENERATORS.items()
        if PREFIX + model in generator_names and model in bundle.parts
    }


def _live_component(name: str, fit: Callable[[FitInputs], Any], after=()) -> Component:
    """A session model as a bundle component, trained when sessions.models names it and
    loaded as a LiveModel (the updater's publications replace it in serving)."""
    load = MODEL_LOADERS[name]

    def fit_live(given: FitInputs) -> LiveModel:
        trained = fit(given) if name in given.config.sessions.models else None
        return LiveModel(name, trained, load)

    return Component(
        name,
        fit=fit_live,
        load=lambda directory, config: LiveModel(name, load(directory), load),
        after=after,
        absent=lambda: LiveModel(name, None, load),  # bundles from before session models
        # an item newer than the model is one it never saw: `live_session` leaves it out of a
        # session, `scores_of` gives it NaN, and the generator proposes only learnt items
        grow=holds_no_items,
    )


def _fit_ssrm(given: FitInputs) -> SSRMModel | None:
    sessions, als = given.config.sessions, given.config.als
    return fit_ssrm(given.data, given.built["ials"].item_factors, sessions, als)


def _draw_reservoir(given: FitInputs) -> SavedReservoir | None:
    if not given.config.sessions.models:
        return None  # no session model to update
    sessions, als = given.config.sessions, given.config.als
    return draw_reservoir(given.data, given.built["ials"].item_factors, sessions, als)


def _graph_fit(name: str) -> Callable[[FitInputs], Any]:
    fit_on = GRAPH_MODELS[name][0]
    return lambda given: fit_on(given.data, given.config.sessions)


def _make(bundle: Any, config: Config, name: str) -> SessionGenerator:
    model = name.removeprefix(PREFIX)
    generator = SESSION_GENERATORS[model](bundle, name, config.sessions.timeout_seconds)
    if generator.model_of() is None:
        log.warning(
            "%s: the bundle has no %s model (sessions.models); it answers nothing", name, model
        )
    return generator


register_component(_live_component("ssrm", _fit_ssrm, after=("ials",)))
for _name in GRAPH_MODELS:
    register_component(_live_component(_name, _graph_fit(_name)))
register_component(
    Component(
        RESERVOIR,
        fit=_draw_reservoir,
        load=lambda directory, config: SavedReservoir.load(directory),
        after=("ials",),
        absent=lambda: None,  # bundles from before it: updates start with an empty reservoir
        grow=holds_no_items,  # the updater's, which learns from sessions, not from serving
    )
)
for _model in SESSION_GENERATORS:
    register_generator(PREFIX + _model, _make)
