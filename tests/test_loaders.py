import json

import numpy as np
import pandas as pd
import pytest

from pipelines.loaders import DEFAULT_STOCK, DataError, load_dataset_dir
from pipelines.synthetic import generate_synthetic
from recsys.dataset import ALL_REGIONS
from recsys_cli.main import main
from serving.holder import BundleHolder
from serving.pipeline import RecommendRequest
from tests.conftest import shop_config

ITEMS = (
    "item_id,categories,price,stock,regions,created_at,title\n"
    "i1,a|b,9.5,3,*,2024-01-01,One\ni2,b,5,0,eu|us,1700000000,Two\n"
)
EVENTS = (
    "user_id,item_id,event_type,value,timestamp\n"
    "u1,i1,view,1,1700000100\nu2,i2,purchase,1,2024-03-01T10:00:00Z\nu1,i2,rating,4,1700000050\n"
)
USERS = 'user_id,region,attributes\nu1,eu,"{""age"": 30}"\nu2,us,{}\n'


def write(tmp_path, events=EVENTS, items=ITEMS, users=USERS):
    (tmp_path / "events.csv").write_text(events)
    (tmp_path / "items.csv").write_text(items)
    if users is not None:
        (tmp_path / "users.csv").write_text(users)
    return tmp_path


def test_valid_csv_directory_loads_sorted_and_typed(tmp_path):
    dataset = load_dataset_dir(write(tmp_path))
    events = dataset.events
    assert list(events["timestamp"]) == sorted(events["timestamp"])
    assert list(events["item_id"]) == ["i2", "i1", "i2"]
    assert events["timestamp"].iloc[-1] == 1709287200  # ISO 8601 parsed as UTC
    assert dataset.items["stock"].tolist() == [3, 0]
    assert dataset.items["created_at"].iloc[0] == 1704067200
    assert dataset.users["region"].tolist() == ["eu", "us"]


def test_parquet_works_like_csv(tmp_path):
    (tmp_path / "csv").mkdir()
    csv_dir = write(tmp_path / "csv")
    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    for name in ("events", "items", "users"):
        pd.read_csv(csv_dir / f"{name}.csv", dtype=str).to_parquet(pq_dir / f"{name}.parquet")
    a, b = load_dataset_dir(csv_dir), load_dataset_dir(pq_dir)
    pd.testing.assert_frame_equal(a.events, b.events)


def test_users_file_is_optional(tmp_path):
    dataset = load_dataset_dir(write(tmp_path, users=None))
    assert sorted(dataset.users["user_id"]) == ["u1", "u2"]


@pytest.mark.parametrize(
    ("events", "items", "message"),
    [
        (
            EVENTS.replace("purchase", "buy"),
            ITEMS,
            r"events.csv: row 2 \(line 3\), column 'event_type': unknown event type 'buy'",
        ),
        (
            EVENTS.replace("u1,i1,view,1", "u1,i1,view,abc"),
            ITEMS,
            r"events.csv: row 1 \(line 2\), column 'value': not a finite number: 'abc'",
        ),
        (
            EVENTS.replace("u1,i1,view,1", "u1,i1,view,nan"),
            ITEMS,
            r"column 'value': not a finite number",
        ),
        (
            EVENTS.replace("1700000050", "yesterday"),
            ITEMS,
            r"row 3 \(line 4\), column 'timestamp': not a timestamp",
        ),
        (EVENTS.replace("u2,i2", ",i2"), ITEMS, r"row 2 \(line 3\), column 'user_id': empty id"),
        (
            EVENTS.replace("1700000050", "4102444800"),  # 2100-01-01
            ITEMS,
            r"row 3 \(line 4\), column 'timestamp': '4102444800' is not a time between 1970 "
            r"and 86400 s from now \(data.max_clock_skew_seconds\)$",
        ),
        (
            EVENTS.replace("1700000050", "1700000050000"),
            ITEMS,
            r"column 'timestamp': .* \(milliseconds\? Unix seconds are expected\)",
        ),
        (
            EVENTS.replace("u2,i2", "u" * 10_000 + ",i2"),
            ITEMS,
            r"row 2 \(line 3\), column 'user_id': id 'uuu.*' must be printable and at most 256",
        ),
        (
            EVENTS.replace("u1,i2", "u\x07,i2"),
            ITEMS,
            r"row 3 \(line 4\), column 'user_id': id 'u\\x07' must be printable",
        ),
        (
            EVENTS,
            ITEMS.replace("i2,b", "i\x1b2,b"),
            r"items.csv: row 2 \(line 3\), column 'item_id': id 'i\\x1b2' must be printable",
        ),
        (
            EVENTS.replace("u1,i1,view", "u1,i9,view"),
            ITEMS,
            r"column 'item_id': item 'i9' is not in the catalog items.csv",
        ),
        (
            EVENTS,
            ITEMS.replace("i2,b", "i1,b"),
            r"items.csv: row 2 \(line 3\), column 'item_id': duplicate",
        ),
        (EVENTS, ITEMS.replace("9.5", "-1"), r"column 'price': must not be negative"),
        (EVENTS.replace("event_type,", ""), ITEMS, r"events.csv: missing column\(s\) event_type"),
        (
            "user_id,item_id,event_type,value,timestamp\n",
            ITEMS,
            r"events.csv: has a header but no rows",
        ),
        (
            'user_id,item_id,event_type,value,timestamp\n"u1,i1,view,1,1\n',
            ITEMS,
            r"events.csv: cannot be read",
        ),
    ],
)
def test_bad_files_name_file_row_and_column(tmp_path, events, items, message):
    with pytest.raises(DataError, match=message):
        load_dataset_dir(write(tmp_path, events=events, items=items))


def test_the_clock_skew_allowed_is_configured(tmp_path):
    directory = write(tmp_path, events=EVENTS.replace("1700000050", "4102444800"))  # 2100
    century = 100 * 365 * 86_400
    assert load_dataset_dir(directory, century).events["timestamp"].max() == 4_102_444_800
    with pytest.raises(DataError, match="and 60 s from now"):
        load_dataset_dir(directory, 60)


def test_bad_user_attributes_and_missing_files(tmp_path):
    with pytest.raises(
        DataError, match=r"users.csv: row 2 \(line 3\), column 'attributes': must be a JSON"
    ):
        load_dataset_dir(write(tmp_path, users=USERS.replace("u2,us,{}", "u2,us,[1]")))
    (tmp_path / "items.csv").unlink()
    with pytest.raises(DataError, match="no items.csv or items.parquet"):
        load_dataset_dir(tmp_path)
    with pytest.raises(DataError, match="data directory not found"):
        load_dataset_dir(tmp_path / "missing")


MINIMAL_EVENTS = (
    "user_id,item_id,event_type,value,timestamp\n"
    "u1,i1,view,1,1700000300\nu2,i1,purchase,1,1700000100\nu2,i2,click,1,1700000200\n"
)


def test_items_need_only_an_id_and_the_rest_takes_documented_defaults(tmp_path):
    # i3 has no events: created when the data starts
    dataset = load_dataset_dir(
        write(tmp_path, events=MINIMAL_EVENTS, items="item_id\ni1\ni2\ni3\n", users=None)
    )
    items = dataset.items
    assert items["item_id"].tolist() == ["i1", "i2", "i3"]
    assert items["price"].isna().all()  # unknown
    assert items["stock"].tolist() == [DEFAULT_STOCK] * 3  # in stock
    assert items["regions"].tolist() == [ALL_REGIONS] * 3  # sold everywhere
    assert items["created_at"].tolist() == [1700000100, 1700000200, 1700000100]
    assert items["title"].tolist() == items["categories"].tolist() == [""] * 3
    assert (items.dtypes["price"], items.dtypes["stock"], items.dtypes["created_at"]) == (
        "float64",
        "int64",
        "int64",
    )
    assert sorted(dataset.users["user_id"]) == ["u1", "u2"]
    assert set(dataset.users["region"]) == {""}


def test_blank_cells_of_optional_item_columns_take_the_defaults(tmp_path):
    items = "item_id,price,stock,created_at,regions\ni1,,,,\ni2,2.5,0,1600000000,eu\n"
    loaded = load_dataset_dir(write(tmp_path, events=MINIMAL_EVENTS, items=items)).items
    assert np.isnan(loaded["price"].iat[0]) and loaded["price"].iat[1] == 2.5
    assert loaded["stock"].tolist() == [DEFAULT_STOCK, 0]
    assert loaded["created_at"].tolist() == [1700000100, 1600000000]
    assert loaded["regions"].tolist() == [ALL_REGIONS, "eu"]
    # in Parquet a null is a blank cell: typed columns (float price, Int64 stock) read alike
    typed = pd.read_csv(tmp_path / "items.csv").astype({"stock": "Int64"})
    typed.to_parquet(tmp_path / "items.parquet")
    (tmp_path / "items.csv").unlink()
    pd.testing.assert_frame_equal(load_dataset_dir(tmp_path).items, loaded)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("item_id,price\ni1,1\ni2,cheap\n", r"row 2 \(line 3\), column 'price': not a finite"),
        ("item_id,price\ni1,1\ni2,nan\n", r"row 2 \(line 3\), column 'price': not a finite"),
        ("item_id,stock\ni1,-2\ni2,1\n", r"row 1 \(line 2\), column 'stock': must not be neg"),
        ("item_id,created_at\ni1,soon\ni2,\n", r"row 1 \(line 2\), column 'created_at': not a"),
        ("price\n1\n", r"items.csv: missing column\(s\) item_id"),
    ],
)
def test_present_optional_item_cells_are_still_validated(tmp_path, items, message):
    with pytest.raises(DataError, match=message):
        load_dataset_dir(write(tmp_path, events=MINIMAL_EVENTS, items=items))


def test_extra_user_columns_become_attributes(tmp_path):
    users = "user_id,age,gender,occupation,zip\nu1,24,M,technician,02134\nu2,53,F,other,\n"
    loaded = load_dataset_dir(write(tmp_path, users=users)).users
    assert loaded["region"].tolist() == ["", ""]
    assert [json.loads(a) for a in loaded["attributes"]] == [
        {"age": "24", "gender": "M", "occupation": "technician", "zip": "02134"},  # as text
        {"age": "53", "gender": "F", "occupation": "other"},  # a blank cell is no key
    ]
    # beside an attributes column the keys are merged; Parquet values keep their JSON type
    pd.DataFrame(
        {"user_id": ["u1", "u2"], "region": ["eu", None], "attributes": ['{"vip": true}', None]}
    ).assign(age=[24, 53]).to_parquet(tmp_path / "users.parquet")
    (tmp_path / "users.csv").unlink()
    loaded = load_dataset_dir(tmp_path).users
    assert loaded["region"].tolist() == ["eu", ""]
    assert [json.loads(a) for a in loaded["attributes"]] == [{"vip": True, "age": 24}, {"age": 53}]


@pytest.mark.parametrize(
    ("users", "message"),
    [
        (
            "user_id,age\nu1,20\nu2,30\n u1 ,40\n",
            r"users.csv: row 3 \(line 4\), column 'user_id': duplicate user id 'u1'",
        ),
        (
            'user_id,attributes,age\nu1,{},20\nu2,"{""age"": 3}",30\n',
            r"users.csv: row 2 \(line 3\), column 'age': 'age' is also a key of the row's attr",
        ),
        ("region\neu\n", r"users.csv: missing column\(s\) user_id"),
    ],
)
def test_bad_users_files_are_refused(tmp_path, users, message):
    with pytest.raises(DataError, match=message):
        load_dataset_dir(write(tmp_path, users=users))


def test_nightly_and_recommend_on_files_with_only_the_required_columns(tmp_path):
    """The whole path (CLI nightly, both rankers trained, a request served) on a shop whose
    items file has nothing but ids: every price unknown (NaN), every item in stock."""
    shop = generate_synthetic(n_users=150, n_items=120, n_events=5_000, n_categories=6, seed=3)
    data = tmp_path / "data"
    data.mkdir()
    events = shop.events.assign(event_type=shop.events["event_type"].astype(str))
    events.to_csv(data / "events.csv", index=False)
    shop.items[["item_id"]].to_csv(data / "items.csv", index=False)
    config = shop_config(tmp_path, data)
    toml = tmp_path / "recsys.toml"
    toml.write_text("[als]\nfactors = 16\niterations = 5\n")
    args = ["--config", str(toml), "--data", str(data), "--artifacts", config.artifacts.root]
    assert main(["nightly", *args]) == 0
    holder = BundleHolder(config)
    assert holder.refresh()
    pipeline = holder.pipeline()
    assert np.isnan(pipeline.bundle.stats.item_price).all()
    assert pipeline.bundle.catalog.in_stock.all()
    result = pipeline.recommend(RecommendRequest(str(shop.events["user_id"].iat[0]), 10))
    assert len(result.items) == 10
    # placed by the stages the stage gate kept, or by the iALS order if it kept none
    rankers = pipeline.bundle.rankers
    served = set(rankers.served_stages(config.ranking.stages)) or {"als_dot"}
    assert {item.stage for item in result.items} <= served
    assert set(rankers.dropped) | served >= set(config.ranking.stages)


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_a_parquet_timestamp_column_is_read_as_its_time(tmp_path, unit):
    write(tmp_path)
    events = pd.read_csv(tmp_path / "events.csv")
    seconds = [1700000100, 1709287200, 1700000050]  # the CSV's, the ISO one resolved
    events["timestamp"] = pd.Series(pd.to_datetime(seconds, unit="s")).astype(f"datetime64[{unit}]")
    (tmp_path / "events.csv").unlink()
    events.to_parquet(tmp_path / "events.parquet")
    loaded = load_dataset_dir(tmp_path).events
    assert sorted(loaded["timestamp"].tolist()) == sorted(seconds)
