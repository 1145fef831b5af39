"""The `recsys` command line: nightly, serve, evaluate, tune, and a client for a running server."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config import Config, ConfigError, load_config

if TYPE_CHECKING:  # imported where used, to keep the command line quick to start
    import grpc
    import pandas as pd

    from recsys.dataset import Dataset
    from serving.events import Event
    from serving.pipeline import ScoredItem

BAD_EVENT = re.compile(r"events\[(\d+)\]")  # how LogEvents names the event it refused
TITLE_WIDTH = 40  # characters of an item title `recsys recommend` prints


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        config = _config(args)
        return args.run(args, config)
    except ConfigError as err:
        print(f"recsys: configuration error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # Domain errors carry a message that says what and where; show it, not a traceback.
        from grpc import RpcError

        if isinstance(err, RpcError):
            print(f"recsys: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
        if args.verbose:
            raise
        print(f"recsys: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML file overriding the packaged defaults")
    common.add_argument(
        "--data", help="data source: 'movielens-100k' or a directory of CSV/Parquet"
    )
    common.add_argument("--artifacts", help="directory of model bundles")
    common.add_argument("--host", help="server host (serve) or host to call (client commands)")
    common.add_argument("--port", type=int, help="server port")
    common.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(required=True, metavar="command")

    nightly = sub.add_parser(
        "nightly", parents=[common], help="retrain everything and publish a bundle"
    )
    nightly.add_argument(
        "--force", action="store_true", help="publish even if the holdout metric regressed"
    )
    nightly.set_defaults(run=_nightly)

    evaluate = sub.add_parser(
        "evaluate", parents=[common], help="holdout evaluation with a written report"
    )
    evaluate.add_argument(
        "--stage",
        default="served",
        choices=["served", "candidates", "streaming"],
        help="served: the real pipeline and cascade beside the baselines on each protocol; "
        "candidates: recall of the union and of each generator; streaming: iALS kept up to "
        "date by ALS steps or retrains over five blocks of a stream (the data and a "
        "synthetic stream with drift and new items)",
    )
    evaluate.add_argument(
        "--protocol",
        action="append",
        choices=["chronological", "leave_last_out", "sampled"],
        help="repeat for several (default: all three)",
    )
    evaluate.set_defaults(run=_evaluate)

    tune = sub.add_parser(
        "tune",
        parents=[common],
        help="try every combination of a grid of settings on validation users only",
    )
    tune.add_argument(
        "--grid", required=True, help="TOML file with a [grid] table: config keys -> values"
    )
    tune.add_argument(
        "--protocol",
        choices=["chronological", "leave_last_out"],
        help="validation split (default: evaluation.protocol)",
    )
    tune.set_defaults(run=_tune)

    serve = sub.add_parser("serve", parents=[common], help="run the gRPC server until SIGTERM")
    serve.set_defaults(run=_serve)

    nearline = sub.add_parser(
        "nearline",
        parents=[common],
        help="keep iALS vectors up to date from the event log by ALS steps, until SIGTERM",
    )
    nearline.set_defaults(run=_nearline)

    updater = sub.add_parser(
        "session-updater",
        parents=[common],
        help="train the bundle's session models (SSRM, GAG, MGIA) further on the sessions "
        "LogEvents brings and publish them to serving every sessions.update_seconds, until "
        "SIGTERM",
    )
    updater.set_defaults(run=_session_updater)

    schedule = sub.add_parser(
        "schedule",
        parents=[common],
        help="run `recsys nightly` daily at schedule.nightly_at (UTC), for machines without "
        "cron or systemd (see deploy/)",
    )
    schedule.set_defaults(run=_schedule)

    recommend = sub.add_parser("recommend", parents=[common], help="ask a running server")
    recommend.add_argument("--user", required=True)
    recommend.add_argument("-k", type=int, default=10)
    recommend.add_argument("--region", default="")
    recommend.add_argument("--exclude", nargs="*", default=[])
    recommend.add_argument("--basket", nargs="*", default=[])
    recommend.add_argument("--favorites", nargs="*", default=[])
    recommend.set_defaults(run=_recommend)

    rank = sub.add_parser("rank", parents=[common], help="rank given items for a user")
    rank.add_argument("--user", required=True)
    rank.add_argument("items", nargs="+")
    rank.set_defaults(run=_rank)

    similar = sub.add_parser("similar", parents=[common], help="items similar to an item")
    similar.add_argument("--item", required=True)
    similar.add_argument("-k", type=int, default=10)
    similar.set_defaults(run=_similar)

    log_events = sub.add_parser(
        "log-events", parents=[common], help="send an events file to a running server"
    )
    log_events.add_argument(
        "file", help="events (.csv, .jsonl or .parquet): user_id,item_id,event_type,value,timestamp"
    )
    log_events.add_argument(
        "--batch", type=int, default=1000, help="events per call, at most events.max_batch"
    )
    log_events.set_defaults(run=_log_events)

    synth = sub.add_parser("synth", parents=[common], help="write a synthetic shop as data files")
    synth.add_argument("--out", required=True, help="directory to write events/items/users into")
    synth.add_argument("--users", type=int, default=100_000)
    synth.add_argument("--items", type=int, default=20_000)
    synth.add_argument("--events", type=int, default=2_000_000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    synth.set_defaults(run=_synth)

    movielens = sub.add_parser(
        "movielens",
        parents=[common],
        help="write MovieLens-100k as data files for --data, without the synthetic shop columns",
    )
    movielens.add_argument("--out", required=True, help="directory to write the files into")
    movielens.add_argument(
        "--shop-columns",
        action="store_true",
        help="keep the embedded default's synthetic price, stock and regions",
    )
    movielens.add_argument("--format", choices=["parquet", "csv"], default="csv")
    movielens.set_defaults(run=_movielens)

    health = sub.add_parser(
        "health", parents=[common], help="check (or wait for) a server's health"
    )
    health.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for the server to come up"
    )
    health.set_defaults(run=_health)

    token = sub.add_parser(
        "token",
        parents=[common],
        help="make a bearer token: prints it, and the line for serving.tokens_file",
    )
    token.add_argument("role", choices=("read", "write"), help="write may also LogEvents")
    token.set_defaults(run=_token)
    return parser


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    overrides: dict[str, dict] = {}
    if args.data:
        overrides["data"] = {"source": args.data}
    if args.artifacts:
        overrides["artifacts"] = {"root": args.artifacts}
    serving = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if serving:
        overrides["serving"] = serving
    return config.replace(**overrides) if overrides else config


def _nightly(args: argparse.Namespace, config: Config) -> int:
    from pipelines.nightly import run_nightly

    result = run_nightly(config, force=args.force)
    state = "published as current" if result.published else "NOT published"
    print(f"bundle {result.manifest.version}: {state} ({result.reason})")
    logged = result.manifest.metrics.get("event_log", {})
    print(
        f"event log: {logged.get('events', 0)} events folded in "
        f"({logged.get('new_items', 0)} new items, {logged.get('new_users', 0)} new users)"
    )
    for decision in result.gate.decisions:
        print(
            f"stage {decision.stage}: {'kept' if decision.kept else 'dropped'} ({decision.reason})"
        )
    _print_metrics(result.gate.guarded())
    return 0 if result.published else 3


def _tune(args: argparse.Namespace, config: Config) -> int:
    from pipelines.sources import load_dataset
    from pipelines.tuning import format_tuning_report, read_grid, tune, write_tuning_report

    trials = read_grid(args.grid)
    dataset = load_dataset(config.data)
    result = tune(dataset, config, trials, protocol=args.protocol, show_progress=True)
    title = f"Tuning on {dataset.name}"
    print(format_tuning_report(result, title))
    out = write_tuning_report(result, config.evaluation.report_dir, title)
    print(f"report written to {out}/tuning.md")
    return 0


def _evaluate(args: argparse.Namespace, config: Config) -> int:
    from pipelines.sources import load_dataset

    dataset = load_dataset(config.data)
    if args.stage == "candidates":
        from pipelines.candidate_evaluation import evaluate_candidate_stage
        from pipelines.candidate_report import format_candidate_report, write_candidate_report

        result = evaluate_candidate_stage(dataset, config, show_progress=True)
        title = f"Candidate generators on {dataset.name} (chronological holdout)"
        print(format_candidate_report(result, title))
        out = write_candidate_report(result, config.evaluation.report_dir, title)
        print(f"report written to {out}/report.md")
        return 0
    if args.stage == "streaming":
        return _evaluate_streaming(dataset, config)
    from pipelines.quality_report import (
        evaluate_quality,
        format_quality_report,
        write_quality_report,
    )

    protocols = (
        tuple(args.protocol) if args.protocol else ("chronological", "leave_last_out", "sampled")
    )
    quality = evaluate_quality(dataset, config, protocols, show_progress=True)
    title = f"Served lists and baselines on {dataset.name}"
    print(format_quality_report(quality, title))
    out = write_quality_report(quality, config.evaluation.report_dir, title)
    print(f"report written to {out}/report.md")
    return 0


def _evaluate_streaming(dataset: Dataset, config: Config) -> int:
    from pipelines.session_streaming import evaluate_session_streaming
    from pipelines.session_streaming_report import format_session_report
    from pipelines.streaming_evaluation import SYNTHETIC_STREAM, evaluate_streaming
    from pipelines.streaming_report import format_streaming_report, write_streaming_report
    from pipelines.synthetic import generate_from_spec
    from pipelines.synthetic_sessions import generate_session_stream

    streams = (dataset, generate_from_spec(SYNTHETIC_STREAM))
    results = [evaluate_streaming(d, config, show_progress=True) for d in streams]
    sessions = [
        evaluate_session_streaming(d, config, show_progress=True)
        for d in (dataset, generate_session_stream())
    ]
    title = "iALS on a stream: ALS steps against retraining"
    print(format_streaming_report(results, title))
    print(format_session_report(sessions))
    out = write_streaming_report(results, config.evaluation.report_dir, title, sessions)
    print(f"report written to {out}/report.md")
    return 0


def _synth(args: argparse.Namespace, config: Config) -> int:
    from pipelines.loaders import save_dataset_dir
    from pipelines.synthetic import generate_synthetic

    dataset = generate_synthetic(
        args.users, args.items, args.events, seed=args.seed, show_progress=True
    )
    out = save_dataset_dir(dataset, args.out, args.format)
    print(f"wrote {len(dataset.events)} events, {len(dataset.items)} items to {out}")
    return 0


def _movielens(args: argparse.Namespace, config: Config) -> int:
    from pipelines.loaders import save_dataset_dir
    from pipelines.movielens import SHOP_COLUMNS, load_movielens_100k

    dataset = load_movielens_100k(config.data.cache_dir)
    left_out = () if args.shop_columns else SHOP_COLUMNS
    out = save_dataset_dir(dataset, args.out, args.format, leave_out_item_columns=left_out)
    print(f"wrote {len(dataset.events)} events, {len(dataset.items)} items to {out}")
    return 0


def _serve(args: argparse.Namespace, config: Config) -> int:
    from serving.grpc.supervisor import serve_forever

    serve_forever(config)
    return 0


def _nearline(args: argparse.Namespace, config: Config) -> int:
    import signal
    import threading
    import time

    from pipelines.nearline import BatchReport, run_nearline

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    totals = {"events": 0, "users": 0, "items": 0, "printed": 0.0}

    def progress(report: BatchReport) -> None:
        for key in ("events", "users", "items"):
            totals[key] += getattr(report, key)
        if time.monotonic() - totals["printed"] >= 10:  # a line every 10 s, not per batch
            totals["printed"] = time.monotonic()
            print(
                f"nearline: bundle {report.version}: {report.applied} events applied since "
                f"the bundle; since start {totals['events']} events, {totals['users']} user "
                f"and {totals['items']} item vectors; last batch {report.seconds * 1000:.0f} ms",
                flush=True,
            )

    if config.nearline.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(config.nearline.metrics_port, addr=config.serving.metrics_host)
    print(f"recsys nearline following {config.artifacts.root} (SIGTERM stops)", flush=True)
    run_nearline(config, stop, progress)
    return 0


def _session_updater(args: argparse.Namespace, config: Config) -> int:
    import signal
    import threading

    from pipelines.session_updater import UpdateReport, run_session_updater

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def progress(report: UpdateReport) -> None:
        print(
            f"session-updater: bundle {report.bundle}: published {report.published} "
            f"({', '.join(report.models)}) after learning {report.sessions} new sessions "
            f"(reservoir {report.reservoir}) in {report.seconds:.1f} s",
            flush=True,
        )

    print(f"recsys session-updater following {config.artifacts.root} (SIGTERM stops)", flush=True)
    run_session_updater(config, stop, progress)
    return 0


def _schedule(args: argparse.Namespace, config: Config) -> int:
    import signal
    import threading

    from pipelines.schedule import run_schedule

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    passed = [
        part
        for flag, value in (("--config", args.config), ("--data", args.data))
        if value
        for part in (flag, value)
    ]
    passed += ["--artifacts", config.artifacts.root]
    print(f"recsys schedule: nightly daily at {config.schedule.nightly_at} UTC", flush=True)
    run_schedule(config.schedule.nightly_at, passed, stop)
    return 0


def _token(args: argparse.Namespace, config: Config) -> int:
    from serving.grpc.auth import new_token

    token, line = new_token(args.role)
    print(f"token (give it to the client; it is not stored anywhere): {token}")
    print(f"line for serving.tokens_file: {line}")
    return 0


def _client(config: Config):
    from serving.grpc.client import RecommenderClient
    from serving.grpc.tls import channel_credentials

    token_file = config.serving.client_token_file
    token = Path(token_file).read_text().strip() if token_file else None
    credentials = channel_credentials(
        config.serving.client_tls_ca_file,
        config.serving.client_tls_cert_file,
        config.serving.client_tls_key_file,
    )
    return RecommenderClient(
        f"{config.serving.host}:{config.serving.port}", token=token, credentials=credentials
    )


def _recommend(args: argparse.Namespace, config: Config) -> int:
    with _client(config) as client:
        result = client.recommend(
            args.user,
            args.k,
            region=args.region,
            exclude=args.exclude,
            basket=args.basket,
            favorites=args.favorites,
        )
    cold = " (cold start)" if result.cold_start else ""
    print(f"user {args.user}{cold}, bundle {result.model_version}, request {result.request_id}")
    if result.degraded:
        dropped = ", ".join(f"{g} ({why})" for g, why in result.trace.dropped.items())
        print(f"degraded: built without {dropped}")
    _print_items(result.items)
    return 0


def _rank(args: argparse.Namespace, config: Config) -> int:
    with _client(config) as client:
        _print_items(client.rank(args.user, args.items))
    return 0


def _similar(args: argparse.Namespace, config: Config) -> int:
    with _client(config) as client:
        _print_items(client.similar_items(args.item, args.k))
    return 0


def _log_events(args: argparse.Namespace, config: Config) -> int:
    """Send the file in batches, in file order; stop at the first batch the server refuses."""
    from grpc import RpcError
    from tqdm import tqdm

    from pipelines.loaders import load_events_file

    if not 1 <= args.batch <= config.events.max_batch:
        raise ValueError(
            f"--batch must be between 1 and events.max_batch ({config.events.max_batch}), "
            f"got {args.batch}"
        )
    path = Path(args.file)
    # the whole file is checked before anything is sent
    frame = load_events_file(path, config.data.max_clock_skew_seconds)
    accepted = 0
    with _client(config) as client, tqdm(total=len(frame), unit="event", desc="log-events") as bar:
        for start in range(0, len(frame), args.batch):
            batch = _events(frame.iloc[start : start + args.batch])
            try:
                accepted += client.log_events(batch)
            except RpcError as err:
                bar.close()
                _print_refused_batch(path, start, len(batch), err)
                rows = f" (rows 1-{accepted})" if accepted else ""
                print(f"recsys: {accepted} events accepted{rows}", file=sys.stderr)
                return 1
            bar.update(len(batch))
    print(f"{accepted} events accepted")
    return 0


def _events(frame: pd.DataFrame) -> list[Event]:
    from recsys.dataset import EVENT_COLUMNS
    from serving.events import Event

    return [Event(*row) for row in zip(*(frame[c].tolist() for c in EVENT_COLUMNS), strict=True)]


def _print_refused_batch(path: Path, start: int, size: int, err: grpc.RpcError) -> None:
    """The server names a bad event by its index in the batch; turn that into the file row."""
    from grpc import StatusCode

    from pipelines.loaders import row_location

    details = err.details() or ""
    bad = BAD_EVENT.search(details)
    rows = f"rows {start + 1}-{start + size}"
    where = row_location(path, start + int(bad[1])) if bad else f"{path}: {rows}"
    # a refused batch is all or nothing; after a timeout nobody knows if it was written
    fate = "refused" if err.code() == StatusCode.INVALID_ARGUMENT else "not acknowledged"
    print(
        f"recsys: {err.code().name}: {where}: {details} "
        f"(the batch at offset {start}, {rows}, was {fate})",
        file=sys.stderr,
    )


def _health(args: argparse.Namespace, config: Config) -> int:
    with _client(config) as client:
        if args.wait > 0:
            client.wait_ready(args.wait)
        status = client.health()
    print(status)
    return 0 if status == "SERVING" else 1


def _print_items(items: Sequence[ScoredItem]) -> None:
    """A table; the title column only when the catalog has titles (cut to TITLE_WIDTH), the
    explanations column (business rules that moved an item) only when some item has one,
    after the sources padded to one width."""
    sources = [", ".join(item.sources) for item in items]
    titles = [_cut(item.title, TITLE_WIDTH) for item in items]
    explained = any(item.explanations for item in items)
    width = max(map(len, ["sources", *sources])) if explained else 0
    title_width = max(map(len, titles)) if any(titles) else 0
    titled = f" {'title':<{title_width}}" if title_width else ""
    header = f"{'#':>3}  {'item':<12}{titled} {'score':>9}  {'stage':<9} {'sources':<{width}}"
    print(f"{header}  explanations" if explained else header)
    for rank, (item, found, title) in enumerate(zip(items, sources, titles, strict=True), 1):
        # 4 significant digits: a DLRM probability of 3e-4 must not print as 0.0000
        score = f"{item.score:.4g}"
        titled = f" {title:<{title_width}}" if title_width else ""
        row = f"{rank:>3}  {item.item_id:<12}{titled} {score:>9}  {item.stage:<9} {found:<{width}}"
        print(f"{row}  {', '.join(item.explanations)}".rstrip() if explained else row.rstrip())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_metrics(metrics: dict[str, dict[str, float]]) -> None:
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    sys.exit(main())
