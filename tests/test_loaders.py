import pandas as pd
import pytest

from pipelines.loaders import DataError, load_dataset_dir

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
