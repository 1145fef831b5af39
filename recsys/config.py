"""One typed configuration for every command: the packaged defaults, overridden by a TOML file."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    source: str
    cache_dir: str
    positive_rating: float
    positive_events: tuple[str, ...]


@dataclass(frozen=True)
class ArtifactsConfig:
    root: str
    keep: int


@dataclass(frozen=True)
class EventWeights:
    view: float
    click: float
    cart: float
    purchase: float
    rating: float


@dataclass(frozen=True)
class ALSConfig:
    factors: int
    regularization: float
    alpha: float
    iterations: int
    random_state: int
    negative_rating_weight: float
    event_weights: EventWeights


@dataclass(frozen=True)
class ANNConfig:
    backend: str
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef_search: int
    faiss_nlist: int
    faiss_nprobe: int


@dataclass(frozen=True)
class PopularityConfig:
    window_days: float


@dataclass(frozen=True)
class ServingConfig:
    host: str
    port: int
    max_k: int
    workers: int
    generators: tuple[str, ...]
    filters: tuple[str, ...]
    candidate_budget: int
    bundle_poll_seconds: float


@dataclass(frozen=True)
class EvaluationConfig:
    k: int
    holdout_fraction: float
    regression_tolerance: float
    report_dir: str


@dataclass(frozen=True)
class Config:
    data: DataConfig
    artifacts: ArtifactsConfig
    als: ALSConfig
    ann: ANNConfig
    popularity: PopularityConfig
    serving: ServingConfig
    evaluation: EvaluationConfig = field()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys of some sections replaced, validated like a file."""
        return _build(Config, _merge(self.to_dict(), sections), "")


def load_config(path: str | Path | None = None) -> Config:
    """Packaged defaults, overridden by the TOML file at `path` if given."""
    defaults = tomllib.loads(resources.files("recsys").joinpath("default.toml").read_text())
    if path is None:
        return _build(Config, defaults, "")
    path = Path(path)
    try:
        overrides = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    try:
        return _build(Config, _merge(defaults, overrides), "")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key '{where}{unknown[0]}'; known keys here: {', '.join(known)}")
    kwargs = {}
    for name in known:
        key = f"{where}{name}"
        if name not in values:
            raise ConfigError(f"missing key {key!r}")
        kwargs[name] = _coerce(hints[name], values[name], key)
    config = cls(**kwargs)
    _validate(config, where)
    return config


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key!r} must be a table")
        return _build(hint, value, f"{key}.")
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool):
        if type(value) is not hint:
            raise ConfigError(f"{key!r} must be {hint.__name__}, got {value!r}")
        return value
    if getattr(hint, "__origin__", None) is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key!r} must be a list of strings, got {value!r}")
        return tuple(value)
    raise ConfigError(f"{key!r}: unsupported value {value!r}")


def _validate(config: Any, where: str) -> None:
    """Range checks that a type alone cannot express."""
    positive_ints = {
        "keep",
        "factors",
        "iterations",
        "hnsw_m",
        "hnsw_ef_construction",
        "hnsw_ef_search",
        "faiss_nlist",
        "faiss_nprobe",
        "max_k",
        "workers",
        "candidate_budget",
        "k",
    }
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in positive_ints and value <= 0:
            raise ConfigError(f"{where}{f.name!r} must be positive, got {value}")
        if isinstance(value, float) and value != value:
            raise ConfigError(f"{where}{f.name!r} is NaN")
    if isinstance(config, ANNConfig) and config.backend not in ANN_BACKENDS:
        raise ConfigError(
            f"ann.backend {config.backend!r} unknown; known: {', '.join(ANN_BACKENDS)}"
        )
    if isinstance(config, DataConfig):
        bad = [e for e in config.positive_events if e not in EVENT_TYPES]
        if bad:
            raise ConfigError(f"data.positive_events: unknown event type {bad[0]!r}")
    if isinstance(config, EvaluationConfig) and not 0.0 < config.holdout_fraction < 1.0:
        raise ConfigError("evaluation.holdout_fraction must be in (0, 1)")
    if isinstance(config, ServingConfig) and not 0 <= config.port < 65536:
        raise ConfigError(f"serving.port {config.port} out of range")


ANN_BACKENDS = ("hnsw", "faiss-hnsw", "faiss-ivf", "exact")
