"""`recsys nightly`: rebuild every artifact from scratch, evaluate, publish if no regression.

Steps: load and validate data -> evaluate on a time-based holdout (models trained before
the cut) -> compare with the current bundle -> retrain on all data -> write the bundle
atomically and switch `current`. Nothing is published if any step fails.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipelines.build import build_bundle
from pipelines.evaluation import EvaluationResult, evaluate_candidates
from pipelines.ranker_training import train_rankers
from pipelines.sources import fingerprint, load_dataset
from recsys.bundle import BundleError, Manifest, open_current, publish_bundle
from recsys.config import Config

log = logging.getLogger(__name__)

GATE_MODEL = "als"


@dataclass(frozen=True)
class NightlyResult:
    manifest: Manifest
    evaluation: EvaluationResult
    published: bool
    reason: str


def run_nightly(
    config: Config, *, force: bool = False, show_progress: bool = True
) -> NightlyResult:
    steps = tqdm(total=4, desc="nightly", unit="step", disable=not show_progress)

    steps.set_postfix_str("loading data")
    dataset = load_dataset(config.data)
    data_fingerprint = fingerprint(dataset)
    steps.update()

    steps.set_postfix_str("holdout evaluation")
    evaluation = evaluate_candidates(dataset, config)
    gate_metric = f"recall@{config.evaluation.k}"
    publish, reason = _regression_gate(
        config, evaluation.metrics[GATE_MODEL][gate_metric], gate_metric
    )
    if force and not publish:
        publish, reason = True, f"forced despite: {reason}"
    steps.update()

    steps.set_postfix_str("training on all data")
    built = build_bundle(dataset, config, show_progress=show_progress)
    steps.set_postfix_str("training the rankers")
    rankers = train_rankers(dataset, config, show_progress=show_progress)
    bundle = dataclasses.replace(built.bundle, rankers=rankers)
    steps.update()

    steps.set_postfix_str("publishing" if publish else "writing (not published)")
    manifest = publish_bundle(
        config.artifacts.root,
        bundle.save,
        data_fingerprint=data_fingerprint,
        config=config.to_dict(),
        metrics={
            "holdout": evaluation.metrics,
            "users": evaluation.users,
            "gate_metric": gate_metric,
            "dataset": dataset.name,
            "n_events": len(dataset.events),
            "n_users": len(bundle.users),
            "n_items": len(bundle.items),
            "build_seconds": built.seconds,
        },
        keep=config.artifacts.keep,
        make_current=publish,
    )
    steps.update()
    steps.close()
    log.info("bundle %s %s: %s", manifest.version, "published" if publish else "kept aside", reason)
    return NightlyResult(manifest=manifest, evaluation=evaluation, published=publish, reason=reason)


def _regression_gate(config: Config, new_value: float, metric: str) -> tuple[bool, str]:
    """Publish unless the current bundle scored better (beyond tolerance) on the same protocol."""
    root = Path(config.artifacts.root)
    try:
        _, current = open_current(root)
    except BundleError:
        return True, "no current bundle to compare with"
    old_value = current.metrics.get("holdout", {}).get(GATE_MODEL, {}).get(metric)
    same_protocol = current.config.get("evaluation", {}) == config.to_dict()["evaluation"]
    if old_value is None or not same_protocol:
        return True, f"current bundle {current.version} has no comparable {metric}"
    floor = old_value * (1.0 - config.evaluation.regression_tolerance)
    if new_value < floor:
        return False, (
            f"{metric} {new_value:.4f} regresses below {floor:.4f} "
            f"(current bundle {current.version}: {old_value:.4f})"
        )
    return True, f"{metric} {new_value:.4f} vs current {old_value:.4f}"
