"""The `recsys` command line on the user's own files."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.loaders import load_dataset_dir
from recsys.bundle import current_version, open_current
from recsys.config import EVENT_TYPES
from recsys.dataset import normalize_events
from recsys_cli.main import TITLE_WIDTH, _print_items, main
from serving.pipeline import ScoredItem
from tests.conftest import DATA_CACHE, shop_config
from tests.frames import logged_events


def test_nightly_on_own_parquet_files_publishes(tmp_path, shop_dir, capsys):
    config = shop_config(tmp_path, shop_dir)
    toml = tmp_path / "recsys.toml"
    toml.write_text("[als]\nfactors = 16\niterations = 5\n")
    code = main(
        [
            "nightly",
            "--config",
            str(toml),
            "--data",
            str(shop_dir),
            "--artifacts",
            config.artifacts.root,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "published as current" in out and '"final NDCG@10"' in out
    _, manifest = open_current(config.artifacts.root)
    assert manifest.config["data"]["source"] == str(shop_dir)
    assert manifest.metrics["dataset"] == shop_dir.name


def test_bad_data_fails_clearly_and_publishes_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.csv").write_text(
        "item_id,categories,price,stock,regions,created_at,title\ni1,a,1,1,*,0,t\n"
    )
    (data / "events.csv").write_text("user_id,item_id,event_type,value,timestamp\nu1,i1,like,1,5\n")
    artifacts = tmp_path / "artifacts"
    code = main(["nightly", "--data", str(data), "--artifacts", str(artifacts)])
    err = capsys.readouterr().err
    assert code == 1
    assert "events.csv: row 1 (line 2), column 'event_type': unknown event type 'like'" in err
    assert current_version(artifacts) is None


def test_bad_config_is_exit_code_2(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text("[serving]\nmax_k = -1\n")
    assert main(["nightly", "--config", str(toml)]) == 2
    assert "'max_k' must be positive" in capsys.readouterr().err


def test_client_against_no_server_fails_with_status(capsys):
    code = main(["health", "--host", "127.0.0.1", "--port", "1"])
    assert code == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["recommend", "--user", "1"], ["similar", "--item", "1"]])
def test_client_commands_parse(command):
    from recsys_cli.main import _parser

    assert callable(_parser().parse_args(command).run)


@pytest.fixture()
def events_server(tmp_path):
    """A real server with no model bundle: LogEvents needs none, and it starts in a blink."""
    from serving.grpc.server import start_server
    from tests.conftest import isolated_config

    config = isolated_config(tmp_path)
    running = start_server(config, watch=False)
    yield config, ["--host", "127.0.0.1", "--port", str(running.port)]
    running.stop(grace=0)


def test_a_server_without_a_bundle_is_not_serving(events_server, capsys):
    """Every Recommend it would get is UNAVAILABLE: a health check must not pass it."""
    _, address = events_server
    assert main(["health", *address]) == 1
    assert "NOT_SERVING" in capsys.readouterr().out


def shop_events(n: int) -> pd.DataFrame:
    kinds = np.array(EVENT_TYPES)
    return pd.DataFrame(
        {
            "user_id": [f"u{i % 37}" for i in range(n)],
            "item_id": [f"i{i % 101}" for i in range(n)],
            "event_type": kinds[np.arange(n) % len(kinds)],
            "value": np.where(kinds[np.arange(n) % len(kinds)] == "rating", 4.0, 1.0),
            "timestamp": 1_700_000_000 + np.arange(n) * 7 % 5_000,  # not in time order
        }
    )


def test_log_events_sends_a_file_in_batches(tmp_path, events_server, capsys):
    config, address = events_server
    sent = shop_events(2_500)
    path = tmp_path / "events.csv"
    sent.to_csv(path, index=False)
    code = main(["log-events", str(path), "--batch", "1000", *address])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "2500 events accepted" in out.out
    assert "2500/2500" in out.err  # the progress bar reached the end
    logged = logged_events(config.events.log_dir)
    pd.testing.assert_frame_equal(logged, normalize_events(sent))
    assert len(list(Path(config.events.log_dir).glob("*.jsonl"))) == 1  # one segment, 3 calls


def test_log_events_reads_jsonl(tmp_path, events_server, capsys):
    config, address = events_server
    path = tmp_path / "events.jsonl"
    shop_events(30).to_json(path, orient="records", lines=True)
    assert main(["log-events", str(path), *address]) == 0
    assert "30 events accepted" in capsys.readouterr().out
    assert len(logged_events(config.events.log_dir)) == 30


def test_log_events_names_the_line_of_a_bad_event_type_and_sends_nothing(
    tmp_path, events_server, capsys
):
    config, address = events_server
    events = shop_events(2_500)
    events.loc[1_733, "event_type"] = "like"  # data row 1734: line 1735 after the header
    path = tmp_path / "events.csv"
    events.to_csv(path, index=False)
    code = main(["log-events", str(path), "--batch", "1000", *address])
    err = capsys.readouterr().err
    assert code != 0
    assert "events.csv: row 1734 (line 1735), column 'event_type': unknown event type 'like'" in err
    assert logged_events(config.events.log_dir).empty


def test_log_events_maps_an_event_the_server_refuses_to_its_line(tmp_path, events_server, capsys):
    """A timestamp in 2100 passes the file checks of a client that allows a century of
    clock skew; the server names events[499] of the second batch, which is row 1500 of the
    file: line 1500 of a JSONL file."""
    config, address = events_server
    client = tmp_path / "client.toml"
    client.write_text(f"[data]\nmax_clock_skew_seconds = {100 * 365 * 86_400}\n")
    events = shop_events(2_500)
    events.loc[1_499, "timestamp"] = 4_102_444_800
    path = tmp_path / "events.jsonl"
    events.to_json(path, orient="records", lines=True)
    code = main(["log-events", str(path), "--batch", "1000", "--config", str(client), *address])
    err = capsys.readouterr().err
    assert code == 1
    assert "INVALID_ARGUMENT: " in err and "events.jsonl: row 1500 (line 1500): " in err
    assert "events[499].timestamp 4102444800" in err
    assert "batch at offset 1000, rows 1001-2000, was refused" in err
    assert "1000 events accepted (rows 1-1000)" in err
    assert len(logged_events(config.events.log_dir)) == 1000  # the first batch only


def test_log_events_batch_is_bounded_by_the_configured_maximum(tmp_path, capsys):
    path = tmp_path / "events.csv"
    shop_events(3).to_csv(path, index=False)
    code = main(["log-events", str(path), "--batch", "10001", "--port", "1"])
    assert code == 1
    assert "--batch must be between 1 and events.max_batch (10000), got 10001" in (
        capsys.readouterr().err
    )


def test_recommend_table_shows_explanations_only_when_some_item_has_one(capsys):
    plain = ScoredItem("i1", 0.5, ("als",), "lightgbm")
    boosted = ScoredItem("i22", 0.25, ("als", "i2i_als"), "lightgbm", ("boost:summer", "mmr"))
    _print_items([plain])
    assert "explanations" not in capsys.readouterr().out
    _print_items([plain, boosted])
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.endswith("sources       explanations")
    assert first.rstrip().endswith("als")  # no trailing column for an unexplained item
    assert second.endswith("als, i2i_als  boost:summer, mmr")
    assert header.index("explanations") == second.index("boost:summer")
    _print_items([ScoredItem("i3", 0.000312, ("als",), "dlrm")])
    assert "0.000312" in capsys.readouterr().out  # small probabilities stay readable


def test_recommend_table_shows_titles_cut_to_width_when_the_catalog_has_them(capsys):
    long = "A very long title, " * 5
    _print_items([ScoredItem("i1", 0.5, ("als",), "dlrm", title="Toy Story (1995)")])
    header, row = capsys.readouterr().out.splitlines()
    assert header.index("title") == row.index("Toy Story (1995)")
    _print_items([ScoredItem("i1", 0.5, ("als",), "dlrm", title=long)])
    _, row = capsys.readouterr().out.splitlines()
    assert long[: TITLE_WIDTH - 1] + "…" in row and long not in row
    _print_items([ScoredItem("i1", 0.5, ("als",), "dlrm")])
    assert "title" not in capsys.readouterr().out


def test_movielens_files_leave_out_the_synthetic_shop_columns(tmp_path, ml_dataset):
    """`recsys movielens` writes the embedded default as files for --data: read back, every
    item is in stock and sold everywhere, and nothing else changed."""
    toml = tmp_path / "cache.toml"
    toml.write_text(f'[data]\ncache_dir = "{DATA_CACHE}"\n')
    out = tmp_path / "ml"
    assert main(["movielens", "--out", str(out), "--config", str(toml)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["events.csv", "items.csv", "users.csv"]
    header = (out / "items.csv").read_text().splitlines()[0].split(",")
    assert not {"price", "stock", "regions"} & set(header)
    plain = load_dataset_dir(out)
    assert plain.items["price"].isna().all() and (plain.items["regions"] == "*").all()
    assert (plain.items["stock"] > 0).all() and (ml_dataset.items["stock"] == 0).any()
    assert len(plain.events) == len(ml_dataset.events)
    assert plain.events["item_id"].astype(str).tolist() == ml_dataset.events["item_id"].tolist()
    assert plain.items["title"].tolist() == ml_dataset.items["title"].tolist()
    with_shop = tmp_path / "shop"
    args = ["movielens", "--out", str(with_shop), "--config", str(toml), "--shop-columns"]
    assert main(args) == 0
    stock = load_dataset_dir(with_shop).items["stock"]
    assert stock.tolist() == ml_dataset.items["stock"].tolist()
