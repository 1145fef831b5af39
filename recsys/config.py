"""One typed configuration for every command: the packaged defaults, overridden by a TOML file."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import MISSING, dataclass, field
from datetime import datetime
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
    max_clock_skew_seconds: int  # an event may be stamped at most this far after "now"


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
    cold_items_from_content: bool  # items without interactions get c W (content_step.py)
    content_regularization: float  # λ of that ridge solve


@dataclass(frozen=True)
class ANNConfig:
    backend: str
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef_search: int
    hnsw_build_threads: int  # 1 = the same graph every run; 0 = every core
    faiss_nlist: int
    faiss_nprobe: int


@dataclass(frozen=True)
class PopularityConfig:
    window_days: float


@dataclass(frozen=True)
class TopsConfig:
    """seed 004 "Статические топы": sorted lists by popularity and freshness."""

    windows_days: tuple[int, ...]  # 0 = all history
    depth: int  # items kept per list
    pctr_prior_strength: float  # pseudo-impressions m of the Beta prior (mean = global CTR)
    trending_prior: float  # pseudo-count added to both windows of the growth ratio
    trending_min_count: int  # an item needs this many pairs in the current window
    new_days: int  # "new" lists hold items created in the last new_days
    user_categories: int  # categories of the user's history a by_category top answers from
    live: bool  # serving counts the events logged since the bundle in (candidates/live_tops.py)
    live_events_kept: int  # events and (user, item) pairs a process keeps for live tops


@dataclass(frozen=True)
class QuorumConfig:
    """seed 004 "Кворумы": TF-IDF over categories."""

    gamma: float  # IDF(c) = min(-log mean UF(., c), gamma)
    per_category: int  # N items taken from each of the user's category tops
    max_categories: int  # the user's categories (by UF) looked at per request
    depth: int  # items kept per category top (by TF)


@dataclass(frozen=True)
class EALSConfig:
    """seed 004 "ALS": explicit ALS with user and item biases."""

    factors: int
    lambda_emb: float
    lambda_bias: float
    iterations: int
    random_state: int


@dataclass(frozen=True)
class I2IConfig:
    """seed 004 "i2i-списки": per-item neighbour lists."""

    neighbors: int  # list length kept per item and kind
    npmi_min_count: int  # co-occurring pairs seen fewer times are dropped
    history_limit: int  # last positives per user that count for co-occurrence
    text_weight: float  # content similarity = (1 - w) * category Jaccard + w * text cosine
    recent: int  # recent positives a request looks at
    seeds: int  # diverse positives picked among them and looked up
    covisit_window: int  # "covisit" lists: items this close in a user's sequence co-occur


@dataclass(frozen=True)
class SequenceConfig:
    """The user's latest items, newest first: what the sequence-aware generator and features
    read (issue "Ranking that earns its place": the last few items beat every order-blind
    model on next-item protocols)."""

    length: int  # latest distinct items (any event type) kept per user in the bundle
    last_items: int  # of them, the newest this many seed the last_items generator
    decay: float  # weight of the r-th newest item: decay ** r
    lists: tuple[str, ...]  # i2i kinds whose lists the last_items generator sums
    covisit_features: bool  # rank with seq_covisit_1 / seq_decayed_covisit (else NaN)
    covisit_items: int  # the "covisit" lists are read for the newest this many items...
    covisit_decay: float  # ...the r-th newest weighted covisit_decay ** r
    ease_decay: float  # recent_ease and seq_decayed_ease: Σ_r ease_decay^r · B[r-th newest]
    ease_features: bool  # rank with seq_decayed_ease (else NaN)

    def depth(self, kind: str) -> tuple[int, float]:
        """(newest items read, decay) for the `kind` i2i lists: covisit has its own."""
        if kind == "covisit":
            return self.covisit_items, self.covisit_decay
        return self.last_items, self.decay


@dataclass(frozen=True)
class EASEConfig:
    """EASE (Steck 2019): B = I - P / diag(P), P = (XᵀX + λI)⁻¹, closed form; a dense n²
    matrix, so built over at most max_items items (those with the most users)."""

    regularization: float
    max_items: int


@dataclass(frozen=True)
class BusinessConfig:
    """seed 004 "Бизнесовые кандгены": history, basket, favourites and their neighbours."""

    history_items: int  # most recent positives offered again (repeat purchases)
    neighbor_kind: str  # which i2i list expands basket/favourites/history: als, npmi, content
    neighbors_per_item: int


@dataclass(frozen=True)
class LightGBMConfig:
    """The light ranker (DESIGN.md §4): gradient-boosted trees over the ranking features."""

    objective: str  # "binary" or "lambdarank" (LambdaMART, grouped by request)
    num_leaves: int
    learning_rate: float
    num_trees: int  # upper bound; early stopping on the time-based validation set
    early_stopping_rounds: int
    min_data_in_leaf: int
    feature_fraction: float
    random_state: int


@dataclass(frozen=True)
class DLRMConfig:
    """The heavy ranker (seed 000, Naumov et al.; DESIGN.md §4)."""

    embedding_dim: int
    bottom_mlp: tuple[int, ...]  # hidden sizes; the last layer maps to embedding_dim
    top_mlp: tuple[int, ...]  # hidden sizes before the single logit
    dropout: float
    batch_norm: bool
    loss: str  # "bce", "bpr" or "listwise" (softmax cross-entropy over each request's rows)
    epochs: int  # upper bound; the epoch with the best validation NDCG@10 is kept
    batch_size: int  # rows (listwise: whole requests adding up to about this many rows)
    learning_rate: float  # Adam on the MLPs
    embedding_learning_rate: float  # SparseAdam on the embedding tables
    weight_decay: float
    pretrained_mf: bool  # init user/item tables from ALS factors (seed 000's hybrid with MF)
    random_state: int


@dataclass(frozen=True)
class RankingConfig:
    """The cascade after the early filters (DESIGN.md §1, §4) and how nightly trains it."""

    stages: tuple[str, ...]  # registered rankers, in order; empty = iALS dot-product order
    lightgbm_keep: int  # candidates LightGBM passes on to the next stage
    dlrm_serving: str  # "eager", "int8" (dynamic quantization), "torchscript" or "compiled"
    lightgbm_serving: str  # "compiled" (native code, lleaves) or "booster" (LightGBM's own)
    label_share: float  # last share of events the training requests are drawn from
    periods: int  # that share is cut into this many periods, each with its own bundle
    requests_per_user: int  # training requests per user and period, at most
    max_requests: int  # training requests in all, at most (0 = no limit)
    negatives_per_request: int  # candidate rows kept per request beside the positive (0 = all)
    label_events: str  # first touches that label a request: of converted items, or "all"
    requests: str  # "moments", "horizons" or "auto" (REQUEST_KINDS; see request_kind)
    stage_gate: bool  # drop a stage that does not beat its input on validation
    random_negatives: int  # random eligible items added per training request
    nearline_vectors: bool  # requests with a session see the user's stepped iALS vector
    later_positives: int  # the user's next labelling items graded 1 beside the request's
    next_item_grade: int  # the request's own item's grade when later_positives > 0
    rank_orders: tuple[str, ...]  # Rank's input: RANK_ORDERS, the first unless another wins


@dataclass(frozen=True)
class ServingConfig:
    host: str
    port: int
    max_k: int
    workers: int  # ranking calls (Recommend, Rank, SimilarItems) answered at a time
    side_threads: int  # handler threads beyond `workers`, for the other calls (LogEvents)
    max_queued_calls: int  # ranking calls that may wait for a turn; more: RESOURCE_EXHAUSTED
    max_concurrent_calls: int  # calls of any kind in a process; more: RESOURCE_EXHAUSTED
    generators: tuple[str, ...]
    filters: tuple[str, ...]
    candidate_budget: int  # per generator, unless generator_budgets names it
    generator_budgets: dict[str, int]
    blocked_categories: tuple[str, ...]
    bundle_poll_seconds: float
    probe_bundles: bool  # load each new bundle in a throwaway child process first
    probe_timeout_seconds: float
    processes: int  # server processes sharing the port; 0 = one per core
    deadline_ms: int  # a request's deadline when the client sets none
    ranking_reserve_ms: int  # of the deadline, kept for ranking after the generators
    generator_threads: int  # the fan-out's pool; 0 = generators run inline
    generator_chains: int  # pool threads one request's generators are dealt over
    pin_cpus: bool  # each worker process stays on its own CPU
    worker_ports: bool  # each worker also listens on a port of its own
    metrics_port: int  # Prometheus /metrics on metrics_host:metrics_port; 0 = off
    metrics_host: str  # the metrics' own interface (e.g. an internal one)
    reflection: bool  # gRPC server reflection (grpcurl lists the API); false hides it
    log_format: str  # "json" (one object per line, with request_id) or "text"
    tokens_file: str  # "" = no authentication; else role + sha256 per token (grpc/auth.py)
    client_token_file: str  # the token the CLI's client commands send ("" = none)
    tls_cert_file: str  # PEM certificate chain; "" = plaintext (loopback only)
    tls_key_file: str  # its PEM private key
    tls_client_ca_file: str  # PEM CA that client certificates must chain to: mutual TLS
    client_tls_ca_file: str  # the CLI's clients: the CA the server's certificate chains to
    client_tls_cert_file: str  # and, for mutual TLS, their own certificate and key
    client_tls_key_file: str
    drain_seconds: float  # on SIGTERM, in-flight calls get this long to finish

    def budget_of(self, generator: str) -> int:
        return self.generator_budgets.get(generator, self.candidate_budget)


@dataclass(frozen=True)
class EventsConfig:
    log_dir: str  # the durable event log LogEvents appends to
    max_batch: int  # events per LogEvents call
    segment_bytes: int  # a log file is closed and a new one begun past this size
    session_items: int  # recent items remembered per user for the next requests
    exclude_viewed: bool  # also keep just-viewed items out of the next answers
    request_catch_up: int  # logged events a request applies before answering (0: all)
    follow_seconds: float  # a thread of each server process applies new events this often (0: none)


@dataclass(frozen=True)
class NearlineConfig:
    """`recsys nearline`: ALS steps from the event log between nightlies (seed 004,
    "Пошагаем"); also the steps of `recsys evaluate --stage streaming`."""

    poll_seconds: float  # the worker looks for new events this often
    max_batch_events: int  # events per micro-batch at most
    warm_quantile: float  # steps go through vectors with norms at or above this quantile
    item_step_events: int  # an item with a vector is stepped again after this many events
    store: str  # where vectors go: "file" (the artifacts root) or "redis"
    redis_url: str  # for store = "redis", e.g. "redis://127.0.0.1:6379/0"
    metrics_port: int  # Prometheus metrics of the worker on serving.metrics_host; 0 = off
    fresh_slots: int  # serving: items new since the bundle joining a list; 0 = off
    fresh_position: int  # 1-based slot the first of them takes
    # serving: items only the event log knows join the bundle in service (the whole cascade
    # serves them), and hot items take their stepped vectors, at most this often; 0 = never
    join_seconds: float
    join_max_items: int  # at most this many join one nightly's bundle (the largest vectors)


@dataclass(frozen=True)
class SSRMConfig:
    """seed 003 §II.B-C: SSRM, a GRU over the session's items with attention from MF scores."""

    embedding_dim: int  # item embeddings: the GRU's input and the items' output vectors
    hidden: int  # the GRU's hidden state
    mix: float  # w: score = w · session score + (1 - w) · MF score (§II.B.3)
    dropout: float
    epochs: int  # upper bound: the epoch with the best validation recall is kept
    batch_size: int
    learning_rate: float  # Adam
    random_state: int


@dataclass(frozen=True)
class GraphModelConfig:
    """How a graph session model (GAG, MGIA) is trained and updated (candidates.session.gag:
    fit_graph_model, update_gag)."""

    embedding_dim: int
    dropout: float
    epochs: int
    batch_size: int
    learning_rate: float
    random_state: int
    # an online update's batches: the share kept for sessions with new users or items
    update_new_share: float


@dataclass(frozen=True)
class GAGConfig(GraphModelConfig):
    """seed 003 §III: GAG, a graph network over the session graph with the user as its
    global attribute (candidates/session/gag_net.py)."""

    layers: int  # graph network layers


@dataclass(frozen=True)
class MGIAConfig(GraphModelConfig):
    """seed 003 §IV: MGIA, GAG's session graph plus a global item-transition graph
    (candidates/session/mgia_net.py): one GGNN step over the global graph, one BA-GCN layer
    over the session's."""


@dataclass(frozen=True)
class SessionsConfig:
    """seed 003: sessions and the streaming session recommenders trained on them."""

    timeout_seconds: int  # a gap longer than this between a user's events starts a session
    min_length: int  # shorter sessions are left out of training (the seed: 1-item sessions)
    max_length: int  # longer ones too (the seed: more than 20); serving reads this many items
    models: tuple[str, ...]  # the session models nightly trains: "ssrm", "gag", "mgia"
    reservoir_size: int  # past sessions an online update may revisit (§II.D.2)
    update_sample: int  # sessions drawn for each mini-batch step of an update (§II.D.3)
    update_steps: int  # mini-batch steps per update: the seed's bounded update period
    update_seconds: float  # `recsys session-updater` updates and publishes this often
    ssrm: SSRMConfig
    gag: GAGConfig
    mgia: MGIAConfig


SESSION_MODELS = ("ssrm", "gag", "mgia")
# Business rules (serving/rules.py), and which must run before which: "diversity" (MMR and
# the caps) picks the list, so the steps that shape its pool run first; the freshness
# quota edits the picks.
RULE_NAMES = ("boosts", "pins", "dedup", "diversity", "fresh_quota")
RULE_NEEDS_BEFORE = {"diversity": ("boosts", "pins", "dedup"), "fresh_quota": ("diversity",)}


@dataclass(frozen=True)
class ScheduleConfig:
    """`recsys schedule`: the nightly without cron or systemd (deploy/ has both)."""

    nightly_at: str  # "HH:MM", UTC: when the nightly starts each day


@dataclass(frozen=True)
class PromotionRule:
    """One boost or pin of [rules] (a [[rules.promotions]] table); keys left out keep these."""

    name: str  # shown in explanations as "boost:<name>" / "pin:<name>"
    kind: str  # "boost" or "pin"
    items: tuple[str, ...] = ()  # external item ids
    categories: tuple[str, ...] = ()  # catalog category names
    factor: float = 1.0  # boost: multiplies the request's min-max normalised relevance
    position: int = 0  # pin: 1-based slot in the final list
    starts: str = ""  # ISO 8601 with a time zone; "" = open
    ends: str = ""

    def window(self) -> tuple[float, float]:
        """[starts, ends) as Unix seconds; an open end is -inf / +inf."""
        start = _unix_time(self.starts, "starts") if self.starts else float("-inf")
        end = _unix_time(self.ends, "ends") if self.ends else float("inf")
        return start, end


@dataclass(frozen=True)
class RulesConfig:
    """Business rules after ranking (DESIGN.md §5); serving/rules.py applies them."""

    dedup_groups: bool  # keep only the best-ranked item of each product group
    category_cap: int  # at most this many items per category in the answer; 0 = off
    mmr_lambda: float  # MMR: lambda * relevance - (1 - lambda) * max similarity; 1.0 = off
    mmr_depth: int  # top ranked items MMR chooses among
    fresh_quota: int  # at least this many items created within fresh_days; 0 = off
    fresh_days: float
    promotions: tuple[PromotionRule, ...]
    order: tuple[str, ...]  # the rules that run, in this order (RULE_NAMES, validated)


@dataclass(frozen=True)
class ExtensionsConfig:
    """Python modules of the user's own, imported before a bundle is built or loaded: their
    register_component and register_generator calls add parts and generators (README,
    "Extending")."""

    modules: tuple[str, ...]


@dataclass(frozen=True)
class EvaluationConfig:
    k: int
    protocol: str  # the nightly's validation protocol: chronological or leave_last_out
    holdout_fraction: float
    regression_tolerance: float
    report_dir: str
    candidate_cutoffs: tuple[int, ...]  # K of the union's recall@K in --stage candidates
    max_users: int  # test users sampled for --stage candidates (0 = all)


@dataclass(frozen=True)
class Config:
    data: DataConfig
    artifacts: ArtifactsConfig
    als: ALSConfig
    ann: ANNConfig
    popularity: PopularityConfig
    tops: TopsConfig
    quorum: QuorumConfig
    eals: EALSConfig
    i2i: I2IConfig
    sequence: SequenceConfig
    ease: EASEConfig
    business: BusinessConfig
    lightgbm: LightGBMConfig
    dlrm: DLRMConfig
    ranking: RankingConfig
    serving: ServingConfig
    events: EventsConfig
    nearline: NearlineConfig
    sessions: SessionsConfig
    schedule: ScheduleConfig
    rules: RulesConfig
    extensions: ExtensionsConfig
    evaluation: EvaluationConfig = field()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def request_kind(self) -> str:
        """ranking.requests, with "auto" resolved to the question the nightly's validation
        split asks: "horizons" for a chronological one, "moments" otherwise."""
        if self.ranking.requests != "auto":
            return self.ranking.requests
        return "horizons" if self.evaluation.protocol == "chronological" else "moments"

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
    # only [[rules.promotions]] tables have defaults: their optional keys may be left out
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not MISSING}
    kwargs = {}
    for name in known:
        key = f"{where}{name}"
        if name not in values:
            if name not in defaults:
                raise ConfigError(f"missing key {key!r}")
            kwargs[name] = defaults[name]
            continue
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
    origin, args = getattr(hint, "__origin__", None), getattr(hint, "__args__", ())
    if origin is tuple and dataclasses.is_dataclass(args[0]):  # a TOML array of tables
        if not isinstance(value, list | tuple) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{key!r} must be an array of tables, got {value!r}")
        return tuple(_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value))
    if origin is tuple:
        element = args[0]
        if not isinstance(value, list | tuple) or not all(type(v) is element for v in value):
            raise ConfigError(f"{key!r} must be a list of {element.__name__}, got {value!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and type(v) is args[1] for k, v in value.items()
        ):
            raise ConfigError(
                f"{key!r} must be a table of {args[1].__name__} values, got {value!r}"
            )
        return dict(value)
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
        "depth",
        "per_category",
        "max_categories",
        "neighbors",
        "npmi_min_count",
        "history_limit",
        "covisit_window",
        "length",
        "last_items",
        "covisit_items",
        "max_items",
        "recent",
        "seeds",
        "user_categories",
        "neighbors_per_item",
        "trending_prior",
        "trending_min_count",
        "num_leaves",
        "learning_rate",
        "num_trees",
        "early_stopping_rounds",
        "min_data_in_leaf",
        "feature_fraction",
        "embedding_dim",
        "epochs",
        "batch_size",
        "lightgbm_keep",
        "periods",
        "requests_per_user",
        "deadline_ms",
        "max_batch",
        "segment_bytes",
        "session_items",
        "probe_timeout_seconds",
        "max_concurrent_calls",
        "max_batch_events",
        "timeout_seconds",
        "hidden",
        "reservoir_size",
        "layers",
        "update_sample",
    }
    non_negative = {
        "request_catch_up",
        "hnsw_build_threads",
        "max_queued_calls",
        "pctr_prior_strength",
        "gamma",
        "lambda_emb",
        "lambda_bias",
        "content_regularization",
        "update_steps",
        "weight_decay",
    }
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in positive_ints and value <= 0 and not isinstance(config, EALSConfig):
            raise ConfigError(f"{where}{f.name!r} must be positive, got {value}")
        if isinstance(value, float) and value != value:
            raise ConfigError(f"{where}{f.name!r} is NaN")
        if f.name in non_negative and value < 0:
            raise ConfigError(f"{where}{f.name!r} must not be negative, got {value}")
    if isinstance(config, ScheduleConfig) and not re.fullmatch(
        r"([01]\d|2[0-3]):[0-5]\d", config.nightly_at
    ):
        raise ConfigError(f"schedule.nightly_at must be HH:MM (UTC), got {config.nightly_at!r}")
    if isinstance(config, NearlineConfig):
        if not 0.0 <= config.warm_quantile < 1.0:
            raise ConfigError(
                f"nearline.warm_quantile must be in [0, 1), got {config.warm_quantile}"
            )
        if config.item_step_events < 0:
            raise ConfigError(
                f"nearline.item_step_events must not be negative, got {config.item_step_events}"
            )
        if config.store not in NEARLINE_STORES:
            raise ConfigError(
                f"nearline.store {config.store!r} unknown; known: {', '.join(NEARLINE_STORES)}"
            )
        if config.store == "redis" and not config.redis_url:
            raise ConfigError('nearline.store = "redis" needs nearline.redis_url')
        if not 0 <= config.metrics_port < 65536:
            raise ConfigError(f"nearline.metrics_port {config.metrics_port} out of range")
        if config.fresh_slots < 0 or config.fresh_position < 1:
            raise ConfigError("nearline.fresh_slots must be >= 0 and fresh_position >= 1")
        if not config.join_seconds >= 0:  # NaN too
            raise ConfigError(f"nearline.join_seconds must be >= 0, got {config.join_seconds}")
        if config.join_max_items < 0:
            raise ConfigError(f"nearline.join_max_items must be >= 0, got {config.join_max_items}")
        if config.poll_seconds <= 0:
            raise ConfigError(f"nearline.poll_seconds must be positive, got {config.poll_seconds}")
    if isinstance(config, SessionsConfig):
        if config.update_seconds <= 0:
            raise ConfigError("sessions.update_seconds must be positive")
        if not 1 <= config.min_length <= config.max_length:
            raise ConfigError("sessions: need 1 <= min_length <= max_length")
        unknown = [m for m in config.models if m not in SESSION_MODELS]
        if unknown:
            raise ConfigError(
                f"sessions.models: {unknown[0]!r} unknown; known: {', '.join(SESSION_MODELS)}"
            )
    if isinstance(config, SSRMConfig):
        if not 0.0 <= config.mix <= 1.0 or not 0.0 <= config.dropout < 1.0:
            raise ConfigError("sessions.ssrm: mix must be in [0, 1] and dropout in [0, 1)")
        if config.learning_rate <= 0:
            raise ConfigError("sessions.ssrm.learning_rate must be positive")
    if isinstance(config, GraphModelConfig) and not 0.0 < config.update_new_share <= 1.0:
        raise ConfigError(
            f"sessions: update_new_share must be in (0, 1], got {config.update_new_share}"
        )
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
    if isinstance(config, ServingConfig):
        if not 0 <= config.port < 65536:
            raise ConfigError(f"serving.port {config.port} out of range")
        bad = {name: b for name, b in config.generator_budgets.items() if b <= 0}
        if bad:
            name = next(iter(bad))
            raise ConfigError(f"serving.generator_budgets.{name} must be positive, got {bad[name]}")
        if not 0 <= config.metrics_port < 65536:
            raise ConfigError(f"serving.metrics_port {config.metrics_port} out of range")
        if config.generator_chains < 1:
            raise ConfigError(
                f"serving.generator_chains must be >= 1, got {config.generator_chains}"
            )
        if config.generator_threads < 0:
            raise ConfigError(
                f"serving.generator_threads must be >= 0, got {config.generator_threads}"
            )
        if config.processes < 0:
            raise ConfigError(f"serving.processes must be >= 0, got {config.processes}")
        if config.side_threads < 0:
            raise ConfigError(f"serving.side_threads must be >= 0, got {config.side_threads}")
        if not 0 <= config.ranking_reserve_ms < config.deadline_ms:
            raise ConfigError(
                f"serving.ranking_reserve_ms must be in [0, deadline_ms={config.deadline_ms}), "
                f"got {config.ranking_reserve_ms}"
            )
        if config.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"serving.log_format {config.log_format!r} unknown; known: {', '.join(LOG_FORMATS)}"
            )
    if isinstance(config, TopsConfig):
        if any(w < 0 for w in config.windows_days):
            raise ConfigError(
                f"tops.windows_days must be >= 0 (0 = all history): {config.windows_days}"
            )
        if config.live_events_kept < 0:
            raise ConfigError(f"tops.live_events_kept must be >= 0, got {config.live_events_kept}")
    if isinstance(config, EventsConfig) and not config.follow_seconds >= 0:
        raise ConfigError(f"events.follow_seconds must be >= 0, got {config.follow_seconds}")
    if isinstance(config, EALSConfig) and config.factors < 0:
        raise ConfigError(f"eals.factors must be >= 0, got {config.factors}")
    if isinstance(config, SequenceConfig):
        if not 0.0 < config.decay <= 1.0:
            raise ConfigError(f"sequence.decay must be in (0, 1], got {config.decay}")
        if not 0.0 < config.covisit_decay <= 1.0:
            raise ConfigError(
                f"sequence.covisit_decay must be in (0, 1], got {config.covisit_decay}"
            )
        if not 0.0 < config.ease_decay <= 1.0:
            raise ConfigError(f"sequence.ease_decay must be in (0, 1], got {config.ease_decay}")
        unknown = [kind for kind in config.lists if kind not in I2I_KINDS]
        if unknown or not config.lists:
            raise ConfigError(
                f"sequence.lists must name i2i kinds ({', '.join(I2I_KINDS)}), got "
                f"{list(config.lists)}"
            )
    if isinstance(config, EASEConfig) and not config.regularization > 0:
        raise ConfigError(f"ease.regularization must be positive, got {config.regularization}")
    if isinstance(config, I2IConfig) and not 0.0 <= config.text_weight <= 1.0:
        raise ConfigError(f"i2i.text_weight must be in [0, 1], got {config.text_weight}")
    if isinstance(config, BusinessConfig) and config.neighbor_kind not in I2I_KINDS:
        raise ConfigError(
            f"business.neighbor_kind {config.neighbor_kind!r} unknown; "
            f"known: {', '.join(I2I_KINDS)}"
        )
    if isinstance(config, LightGBMConfig) and config.objective not in ("binary", "lambdarank"):
        raise ConfigError(
            f"lightgbm.objective {config.objective!r} unknown; known: binary, lambdarank"
        )
    if isinstance(config, DLRMConfig):
        if config.loss not in ("bce", "bpr", "listwise"):
            raise ConfigError(f"dlrm.loss {config.loss!r} unknown; known: bce, bpr, listwise")
        if not config.embedding_learning_rate > 0:
            rate = config.embedding_learning_rate
            raise ConfigError(f"dlrm.embedding_learning_rate must be positive, got {rate}")
        if not 0.0 <= config.dropout < 1.0:
            raise ConfigError(f"dlrm.dropout must be in [0, 1), got {config.dropout}")
        if any(size <= 0 for size in (*config.bottom_mlp, *config.top_mlp)):
            raise ConfigError("dlrm.bottom_mlp and dlrm.top_mlp sizes must be positive")
    if isinstance(config, RankingConfig):
        # each name must be a registered ranker (ranking.rankers): checked where they load
        if len(set(config.stages)) != len(config.stages):
            raise ConfigError(f"ranking.stages repeats a stage: {config.stages}")
        if config.dlrm_serving not in DLRM_SERVING:
            raise ConfigError(
                f"ranking.dlrm_serving {config.dlrm_serving!r} unknown; "
                f"known: {', '.join(DLRM_SERVING)}"
            )
        if config.lightgbm_serving not in LIGHTGBM_SERVING:
            raise ConfigError(
                f"ranking.lightgbm_serving {config.lightgbm_serving!r} unknown; "
                f"known: {', '.join(LIGHTGBM_SERVING)}"
            )
        if not 0.0 < config.label_share < 1.0:
            raise ConfigError(f"ranking.label_share must be in (0, 1), got {config.label_share}")
        if not 1 <= config.next_item_grade <= MAX_GRADE:
            raise ConfigError(
                f"ranking.next_item_grade must be in [1, {MAX_GRADE}], got {config.next_item_grade}"
            )
        unknown = [name for name in config.rank_orders if name not in RANK_ORDERS]
        if unknown:
            raise ConfigError(
                f"ranking.rank_orders: unknown order {unknown[0]!r}; "
                f"known: {', '.join(RANK_ORDERS)}"
            )
        if not config.rank_orders or len(set(config.rank_orders)) != len(config.rank_orders):
            raise ConfigError(
                f"ranking.rank_orders must name one or more orders, each once, got "
                f"{list(config.rank_orders)}"
            )
        if config.requests not in ("auto", *REQUEST_KINDS):
            raise ConfigError(
                f"ranking.requests {config.requests!r} unknown; known: auto, "
                f"{', '.join(REQUEST_KINDS)}"
            )
        if config.label_events not in ("positives", "all"):
            raise ConfigError(
                f"ranking.label_events {config.label_events!r} unknown; known: positives, all"
            )
        if (
            min(
                config.random_negatives,
                config.max_requests,
                config.negatives_per_request,
                config.later_positives,
            )
            < 0
        ):
            raise ConfigError(
                "ranking.random_negatives, max_requests, negatives_per_request and "
                "later_positives must be >= 0"
            )
    if isinstance(config, PromotionRule):
        _validate_promotion(config, where.rstrip("."))
    if isinstance(config, RulesConfig):
        _validate_rules(config)
    if isinstance(config, EvaluationConfig):
        if config.protocol not in ("chronological", "leave_last_out"):
            raise ConfigError(
                f"evaluation.protocol {config.protocol!r} unknown; "
                "known: chronological, leave_last_out"
            )
        if config.max_users < 0:
            raise ConfigError(f"evaluation.max_users must be >= 0, got {config.max_users}")
        if not config.candidate_cutoffs or min(config.candidate_cutoffs) <= 0:
            raise ConfigError("evaluation.candidate_cutoffs must be positive integers")


def _validate_rules(config: RulesConfig) -> None:
    if not 0.0 <= config.mmr_lambda <= 1.0:
        raise ConfigError(f"rules.mmr_lambda must be in [0, 1], got {config.mmr_lambda}")
    if config.mmr_depth <= 0:
        raise ConfigError(f"rules.mmr_depth must be positive, got {config.mmr_depth}")
    for key in ("category_cap", "fresh_quota"):
        if getattr(config, key) < 0:
            raise ConfigError(f"rules.{key} must be >= 0 (0 = off), got {getattr(config, key)}")
    if config.fresh_days <= 0:
        raise ConfigError(f"rules.fresh_days must be positive, got {config.fresh_days}")
    names = [rule.name for rule in config.promotions]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # explanations name the rule, so two rules must not share a name
        raise ConfigError(f"rules.promotions: name {repeated[0]!r} is used twice")
    _validate_rule_order(config.order)


def _validate_rule_order(order: tuple[str, ...]) -> None:
    for place, name in enumerate(order):
        if name not in RULE_NAMES:
            raise ConfigError(f"rules.order: {name!r} unknown; known: {', '.join(RULE_NAMES)}")
        if name in order[:place]:
            raise ConfigError(f"rules.order: {name!r} is listed twice")
        late = [before for before in RULE_NEEDS_BEFORE.get(name, ()) if before in order[place:]]
        if late:
            raise ConfigError(f"rules.order: {late[0]!r} must come before {name!r}")
    if "fresh_quota" in order and "diversity" not in order:
        raise ConfigError("rules.order: 'fresh_quota' edits the list 'diversity' picks: list both")


def _validate_promotion(rule: PromotionRule, where: str) -> None:
    if not rule.name:
        raise ConfigError(f"{where}.name must not be empty")
    named = f"{where} ({rule.name!r})"
    if rule.kind not in PROMOTION_KINDS:
        raise ConfigError(
            f"{named}.kind {rule.kind!r} unknown; known: {', '.join(PROMOTION_KINDS)}"
        )
    if not rule.items and not rule.categories:
        raise ConfigError(f"{named}: items and categories are both empty; give at least one")
    if rule.kind == "boost" and rule.factor <= 0:
        raise ConfigError(f"{named}.factor must be positive, got {rule.factor}")
    if rule.kind == "pin" and rule.position < 1:
        raise ConfigError(f"{named}.position must be a 1-based slot >= 1, got {rule.position}")
    try:
        start, end = rule.window()
    except ValueError as err:
        raise ConfigError(f"{named}.{err}") from None
    if end <= start:
        raise ConfigError(f"{named}.ends {rule.ends!r} must be after starts {rule.starts!r}")


def _unix_time(text: str, key: str) -> float:
    """Unix seconds of an ISO 8601 time that names its time zone (a bare local time is
    ambiguous across servers)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{key} {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{key} {text!r} has no time zone (end it with Z or +hh:mm)")
    return moment.timestamp()


ANN_BACKENDS = ("hnsw", "faiss-hnsw", "faiss-ivf", "faiss-flat", "exact")
I2I_KINDS = ("als", "npmi", "content", "cosine", "covisit")
DLRM_SERVING = ("eager", "int8", "torchscript", "compiled")
LIGHTGBM_SERVING = ("compiled", "booster")
# The orders Rank's input may take (ranking/rank_orders.py): the iALS dot product, EASE's
# x_u B, and EASE over the user's latest items.
RANK_ORDERS = ("als", "ease", "recent_ease")
# What the rankers' training requests ask (pipelines/ranking_data.py): "moments", what the
# user takes up next at the moment of one of their positives (the session before it seen);
# "horizons", what the user takes up over a whole period, asked at the period's start.
REQUEST_KINDS = ("moments", "horizons")
# The highest training label grade (ranking.next_item_grade): LightGBM's default label_gain
# covers grades 0..30, and ranking.gbdt refuses labels above it.
MAX_GRADE = 30
LOG_FORMATS = ("json", "text")
NEARLINE_STORES = ("file", "redis")
PROMOTION_KINDS = ("boost", "pin")
