"""`recsys nightly`: rebuild every artifact from scratch, gate each ranking stage, publish if
the served list does not regress.

Steps: load and validate data, and fold in every event LogEvents appended (the event log is
the system of record; pipelines.sources) -> on a validation split (`evaluation.protocol`
applied to the data), train a bundle on its training side and let each ranking stage earn its place
(pipelines.stage_gate) -> compare the kept cascade's served NDCG@10 and its candidate
union's HR@50 with the current bundle's, on the same protocol -> retrain on all data with
the kept stages -> write the bundle atomically and switch `current`. Nothing is published if
any step fails.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipelines.build import build_bundle
from pipelines.event_archive import retire_segments
from pipelines.protocols import Holdout, holdout
from pipelines.ranker_training import train_rankers
from pipelines.sources import fingerprint, load_training_source
from pipelines.stage_gate import RANK_PROTOCOL, GateResult, gate_stages
from recsys.bundle import (
    BundleError,
    Manifest,
    current_version,
    folded_log_offsets,
    nightly_lock,
    open_current,
    publish_bundle,
)
from recsys.config import Config
from recsys.dataset import Dataset
from recsys.loaded_bundle import LoadedBundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedBundle:
    bundle: LoadedBundle
    gate: GateResult
    counts: dict[str, int]  # the rankers' training requests
    seconds: dict[str, float]
    validation_bundle: LoadedBundle | None = None  # trained on the validation split's train


@dataclass(frozen=True)
class NightlyResult:
    manifest: Manifest
    gate: GateResult
    published: bool
    reason: str


def train_bundle(dataset: Dataset, config: Config, *, show_progress: bool = False) -> TrainedBundle:
    """Everything nightly trains: the stage gate on a validation split of `dataset`, then
    every component and the kept rankers on all of `dataset`."""
    valid = holdout(dataset, config.evaluation.protocol, config, seed=1)
    rank_valid = _rank_validation(dataset, config)
    trial = bundle_with_rankers(valid.train, config, config.ranking.stages, show_progress)
    gate = gate_stages(trial.bundle, config, valid, rank_valid, show_progress=show_progress)
    final = bundle_with_rankers(dataset, config, gate.kept, show_progress)
    decided = {
        "dropped": gate.dropped,
        "rank_dropped": gate.rank_dropped,
        "rank_order": gate.rank_order,
    }
    rankers = dataclasses.replace(final.bundle.rankers, **decided)
    gated = dataclasses.replace(trial.bundle.rankers, **decided)
    return dataclasses.replace(
        final,
        bundle=final.bundle.replaced(rankers=rankers),
        gate=gate,
        validation_bundle=trial.bundle.replaced(rankers=gated),
    )


def _rank_validation(dataset: Dataset, config: Config) -> Holdout | None:
    """Rank's own pass rides on leave-last-out's split (the same users, the same bundle);
    None where there is none, and Rank serves what Recommend does."""
    if config.evaluation.protocol != "leave_last_out":
        return None
    try:
        return holdout(dataset, RANK_PROTOCOL, config, seed=1)
    except ValueError as error:  # a catalogue too small for 99 never-touched items, say
        log.warning("stage gate: no pass of Rank's own: %s", error)
        return None


def bundle_with_rankers(
    dataset: Dataset, config: Config, stages: tuple[str, ...], show_progress: bool
) -> TrainedBundle:
    built = build_bundle(dataset, config, show_progress=show_progress)
    training = train_rankers(dataset, config, stages, show_progress=show_progress)
    bundle = built.bundle.replaced(rankers=training.rankers)
    return TrainedBundle(bundle, None, training.counts, built.seconds)


def run_nightly(
    config: Config, *, force: bool = False, show_progress: bool = True
) -> NightlyResult:
    with nightly_lock(config.artifacts.root):  # a second run is refused before it trains
        return _run_nightly(config, force, show_progress)


def _run_nightly(config: Config, force: bool, show_progress: bool) -> NightlyResult:
    steps = tqdm(total=3, desc="nightly", unit="step", disable=not show_progress)
    steps.set_postfix_str("loading data and the event log")
    source = load_training_source(config)
    dataset = source.dataset
    data_fingerprint = fingerprint(dataset)
    steps.update()

    steps.set_postfix_str("stage gate and training")
    trained = train_bundle(dataset, config, show_progress=show_progress)
    gate = trained.gate
    publish, reason = _regression_gate(config, gate)
    if force and not publish:
        publish, reason = True, f"forced despite: {reason}"
    steps.update()

    steps.set_postfix_str("publishing" if publish else "writing (not published)")
    bundle = trained.bundle
    manifest = publish_bundle(
        config.artifacts.root,
        bundle.save,
        data_fingerprint=data_fingerprint,
        config=config.to_dict(),
        metrics={
            "validation": gate.summary(),
            "ranker_training": trained.counts,
            "dataset": dataset.name,
            "n_events": len(dataset.events),
            # what the log added; the nearline worker of this bundle starts after `offsets`
            "event_log": {
                "events": source.logged_events,
                "new_items": source.new_items,
                "new_users": source.new_users,
                "offsets": source.log_offsets,
            },
            "n_users": len(bundle.users),
            "n_items": len(bundle.items),
            "build_seconds": trained.seconds,
        },
        keep=config.artifacts.keep,
        make_current=publish,
    )
    steps.update()
    steps.close()
    log.info("bundle %s %s: %s", manifest.version, "published" if publish else "kept aside", reason)
    _compact_event_log(config)
    return NightlyResult(manifest=manifest, gate=gate, published=publish, reason=reason)


def _compact_event_log(config: Config) -> None:
    """Retire the log segments the current bundle has folded in (pipelines.event_archive);
    a failure here costs nothing but disk, so it is logged, not raised."""
    root = Path(config.artifacts.root)
    version = current_version(root)
    try:
        retire_segments(config.events.log_dir, folded_log_offsets(root, version), str(version))
    except OSError as err:
        log.error("event log not compacted: %s", err)


def _same_protocol(old: dict, new: dict) -> bool:
    """Evaluation settings equal as JSON (a manifest holds lists where the config holds
    tuples: compared raw, they never matched and the gate never fired)."""
    return json.loads(json.dumps(old)) == json.loads(json.dumps(new))


def _regression_gate(config: Config, gate: GateResult) -> tuple[bool, str]:
    """Publish unless the current bundle scored better (beyond tolerance) on the same protocol."""
    root = Path(config.artifacts.root)
    new = gate.guarded()
    try:
        _, current = open_current(root)
    except BundleError:
        return True, "no current bundle to compare with"
    summary = current.metrics.get("validation", {})
    same = _same_protocol(current.config.get("evaluation", {}), config.to_dict()["evaluation"])
    old = summary.get("guarded") if isinstance(summary, dict) else None
    if not same or not isinstance(old, dict):
        return True, f"current bundle {current.version} has no comparable validation figures"
    tolerance = config.evaluation.regression_tolerance
    for name, value in new.items():
        before = old.get(name)
        if isinstance(before, int | float) and value < before * (1.0 - tolerance):
            return False, (
                f"{name} {value:.4f} regresses below {before * (1.0 - tolerance):.4f} "
                f"(current bundle {current.version}: {before:.4f})"
            )
    return True, ", ".join(f"{n} {v:.4f} vs current {_figure(old.get(n))}" for n, v in new.items())


def _figure(value: object) -> str:
    """A manifest's figure as the log prints it; an older manifest may lack it."""
    return f"{value:.4f}" if isinstance(value, int | float) else "none"
