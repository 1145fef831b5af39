"""Bring-your-own data: events, items and users from CSV or Parquet, validated.

Every problem is reported as a DataError naming the file, the row and the column, and
loading is read-only, so a bad file can never leave anything half-written.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import EVENT_TYPES
from recsys.dataset import (
    ALL_REGIONS,
    EVENT_COLUMNS,
    ITEM_GROUP,
    MAX_CLOCK_SKEW_SECONDS,
    MAX_ID_LENGTH,
    REQUIRED_ITEM_COLUMNS,
    REQUIRED_USER_COLUMNS,
    USER_COLUMNS,
    Dataset,
    normalize_events,
    unix_seconds,
)

SUFFIXES = (".parquet", ".csv")
EVENT_FILE_SUFFIXES = (*SUFFIXES, ".jsonl")  # one events file, e.g. for `recsys log-events`
# Optional item columns, when absent or blank: price NaN (unknown; features carry NaN as
# missing), stock DEFAULT_STOCK (the in_stock filter keeps stock > 0, so "never runs out"),
# regions ALL_REGIONS, created_at the item's first event (else the data's first event),
# categories and title "".
DEFAULT_STOCK = 2**31 - 1  # exact as float64 and int32, so it survives a CSV round trip


class DataError(ValueError):
    """Input data is malformed; the message says where (file, row, column) and what."""


def load_dataset_dir(
    directory: str | Path, max_clock_skew_seconds: int = MAX_CLOCK_SKEW_SECONDS
) -> Dataset:
    """Read events, items and (optionally) users from `directory`, validating everything
    (events stamped more than `max_clock_skew_seconds` after now are refused)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data directory not found: {directory}")
    events_path = _find(directory, "events", required=True)
    items_path = _find(directory, "items", required=True)
    users_path = _find(directory, "users", required=False)

    items_frame = _read(items_path, REQUIRED_ITEM_COLUMNS)
    events = validate_events(_read(events_path, EVENT_COLUMNS), events_path, max_clock_skew_seconds)
    items = validate_items(items_frame, items_path, events)
    unknown = ~events["item_id"].isin(items["item_id"])
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(
            f"{_where(events_path, row, 'item_id')}: item {events['item_id'].iat[row]!r} "
            f"is not in the catalog {items_path.name} ({int(unknown.sum())} such events)"
        )
    if users_path is None:
        users = pd.DataFrame(
            {"user_id": pd.unique(events["user_id"]), "region": "", "attributes": "{}"}
        )
    else:
        users = validate_users(_read(users_path, REQUIRED_USER_COLUMNS), users_path)
    return Dataset(events=normalize_events(events), items=items, users=users, name=directory.name)


def load_events_file(
    path: str | Path, max_clock_skew_seconds: int = MAX_CLOCK_SKEW_SECONDS
) -> pd.DataFrame:
    """Events from one CSV, Parquet or JSONL file, validated and in file order: row i of the
    answer is row i of the file (see `row_location`), so a later error can name its line."""
    path = Path(path)
    if path.suffix not in EVENT_FILE_SUFFIXES:
        raise DataError(f"{path}: expected a {', '.join(EVENT_FILE_SUFFIXES)} file")
    return validate_events(_read(path, EVENT_COLUMNS), path, max_clock_skew_seconds)


def validate_events(
    frame: pd.DataFrame, path: Path, max_clock_skew_seconds: int = MAX_CLOCK_SKEW_SECONDS
) -> pd.DataFrame:
    for column in ("user_id", "item_id"):
        _require_ids(frame, column, path)
    kinds = frame["event_type"].astype(str).str.strip().str.lower()
    bad = ~kinds.isin(EVENT_TYPES)
    if bad.any():
        row = _first(bad)
        raise DataError(
            f"{_where(path, row, 'event_type')}: "
            f"unknown event type {frame['event_type'].iat[row]!r};"
            f" expected one of {', '.join(EVENT_TYPES)}"
        )
    value = _finite_numbers(frame, "value", path)
    timestamp = _timestamps(frame, "timestamp", path)
    latest = time.time() + max_clock_skew_seconds
    implausible = (timestamp <= 0) | (timestamp > latest)
    if implausible.any():
        # one event in 2100 would move "now" and empty every windowed top
        row = int(np.flatnonzero(implausible)[0])
        hint = " (milliseconds? Unix seconds are expected)" if timestamp[row] > 1e11 else ""
        raise DataError(
            f"{_where(path, row, 'timestamp')}: {str(frame['timestamp'].iat[row])!r} is not a time "
            f"between 1970 and {max_clock_skew_seconds} s from now "
            f"(data.max_clock_skew_seconds){hint}"
        )
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str).str.strip(),
            "item_id": frame["item_id"].astype(str).str.strip(),
            "event_type": kinds,
            "value": value,
            "timestamp": timestamp,
        }
    )


def validate_items(frame: pd.DataFrame, path: Path, events: pd.DataFrame) -> pd.DataFrame:
    """The catalog from `frame`; only item_id is required. Absent columns and blank cells
    take the defaults above (created_at from the validated `events`); a cell that is
    present but bad is still an error naming its row and column."""
    _require_ids(frame, "item_id", path)
    ids = frame["item_id"].astype(str).str.strip()
    duplicated = ids.duplicated()
    if duplicated.any():
        row = _first(duplicated)
        raise DataError(f"{_where(path, row, 'item_id')}: duplicate item id {ids.iat[row]!r}")
    price = _finite_numbers(frame, "price", path, blank=np.nan)
    stock = _finite_numbers(frame, "stock", path, blank=DEFAULT_STOCK)
    for column, values in (("price", price), ("stock", stock)):
        negative = values < 0  # NaN (unknown price) compares False
        if negative.any():
            row = int(np.flatnonzero(negative)[0])
            raise DataError(f"{_where(path, row, column)}: must not be negative, got {values[row]}")
    regions = _text(frame, "regions").str.strip().replace("", ALL_REGIONS)
    first_event = events.groupby("item_id", sort=False)["timestamp"].min()
    created = ids.map(first_event).fillna(events["timestamp"].min()).to_numpy(np.int64)
    items = pd.DataFrame(
        {
            "item_id": ids,
            "categories": _text(frame, "categories"),
            "price": price.astype(np.float64),
            "stock": stock.astype(np.int64),
            "regions": regions,
            "created_at": _timestamps(frame, "created_at", path, blank=created),
            "title": _text(frame, "title"),
        }
    )
    if ITEM_GROUP in frame.columns:  # optional: kept only when the file has it
        group = frame[ITEM_GROUP]
        items[ITEM_GROUP] = group.astype(object).where(group.notna(), "").astype(str).str.strip()
    return items


def validate_users(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Users from `frame`; only user_id is required (region defaults to ""). Columns
    besides user_id, region and attributes are attributes too: each non-blank cell joins
    the row's attributes object under the column's name (CSV cells as text)."""
    _require_ids(frame, "user_id", path)
    ids = frame["user_id"].astype(str).str.strip()
    duplicated = ids.duplicated()
    if duplicated.any():
        row = _first(duplicated)
        raise DataError(f"{_where(path, row, 'user_id')}: duplicate user id {ids.iat[row]!r}")
    extra = [c for c in frame.columns if c not in USER_COLUMNS]
    blank = {column: _blank_cells(frame, column) for column in extra}
    attributes = []
    for row, text in enumerate(_text(frame, "attributes")):
        try:
            values = json.loads(text.strip() or "{}")
            if not isinstance(values, dict):
                raise ValueError("not an object")
        except ValueError:
            raise DataError(
                f"{_where(path, row, 'attributes')}: must be a JSON object, got {text[:60]!r}"
            ) from None
        for column in extra:
            if blank[column][row]:
                continue
            if str(column) in values:
                raise DataError(
                    f"{_where(path, row, str(column))}: {str(column)!r} is also a key of the "
                    "row's attributes object; keep one"
                )
            values[str(column)] = _json_value(frame[column].iat[row])
        # without extra columns the text stays as written
        attributes.append(json.dumps(values) if extra else text.strip() or "{}")
    return pd.DataFrame(
        {
            "user_id": ids,
            "region": _text(frame, "region").str.strip(),
            "attributes": pd.Series(attributes, index=frame.index, dtype=object),
        }
    )


def _find(directory: Path, stem: str, *, required: bool) -> Path | None:
    found = [
        directory / f"{stem}{suffix}"
        for suffix in SUFFIXES
        if (directory / f"{stem}{suffix}").exists()
    ]
    if len(found) > 1:
        raise DataError(f"{directory}: both {found[0].name} and {found[1].name}; keep one")
    if not found and required:
        raise DataError(f"{directory}: no {stem}.csv or {stem}.parquet")
    return found[0] if found else None


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix == ".jsonl":
            frame = _read_jsonl(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as err:
        raise DataError(f"{path}: cannot be read: {err}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}"
        )
    if frame.empty:
        raise DataError(f"{path}: has a header but no rows")
    return frame


def row_location(path: Path, row: int) -> str:
    """'<path>: row <row + 1> (line <n>)' for the 0-based data row of a file read here;
    the line is given for text files (CSV has a header line, JSONL has none)."""
    header_lines = {".csv": 1, ".jsonl": 0}.get(path.suffix)
    line = "" if header_lines is None else f" (line {row + 1 + header_lines})"
    return f"{path}: row {row + 1}{line}"


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; a blank line is refused, as it would shift the line
    number of every error after it (row i is line i + 1)."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    blank = next((i for i, line in enumerate(lines[:-1]) if not line.strip()), None)
    if blank is not None:
        raise ValueError(f"line {blank + 1} is blank; JSONL holds one object per line")
    # dtype=False: JSON types as written, no dates guessed from names like "timestamp"
    return pd.read_json(io.StringIO(text), lines=True, dtype=False)


def _where(path: Path, row: int, column: str) -> str:
    return f"{row_location(path, row)}, column {column!r}"


def _first(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0])


def _require_ids(frame: pd.DataFrame, column: str, path: Path) -> None:
    """Ids as serving accepts them from callers (an id it refuses could never be asked for):
    non-empty, printable, at most MAX_ID_LENGTH characters."""
    empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
    if empty.any():
        raise DataError(f"{_where(path, _first(empty), column)}: empty id")
    ids = frame[column].astype(str)
    distinct = pd.Series(ids.unique())  # one check per id, not per event
    bad = distinct[(distinct.str.len() > MAX_ID_LENGTH) | ~distinct.map(str.isprintable)]
    if len(bad):
        row = _first(ids.isin(bad))
        raise DataError(
            f"{_where(path, row, column)}: id {ids.iat[row][:40]!r} must be printable and at "
            f"most {MAX_ID_LENGTH} characters"
        )


def _blank_cells(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Bool per row: the cell is missing (NaN, None, a null in Parquet) or only whitespace."""
    raw = frame[column]
    return (raw.isna() | (raw.astype(str).str.strip() == "")).to_numpy()


def _json_value(value: object) -> object:
    """A cell as JSON: numpy scalars as Python numbers and booleans, anything else that
    JSON cannot hold (dates, bytes) as text."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, str | int | float | bool) else str(value)


def _text(frame: pd.DataFrame, column: str, blank: str = "") -> pd.Series:
    """The column as str, `blank` where a cell is missing or the column is absent."""
    if column not in frame.columns:
        return pd.Series(blank, index=frame.index, dtype=object)
    raw = frame[column]
    return raw.astype(object).where(raw.notna(), blank).astype(str)


def _finite_numbers(
    frame: pd.DataFrame, column: str, path: Path, *, blank: float | None = None
) -> np.ndarray:
    """float64 per row; a blank cell is an error, or `blank` for an optional column (which
    may then be absent). Text that is not a finite number is an error either way."""
    if blank is not None and column not in frame.columns:
        return np.full(len(frame), blank, dtype=np.float64)
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64, copy=True)
    bad = ~np.isfinite(values)
    if blank is not None:
        missing = _blank_cells(frame, column)
        values[missing] = blank
        bad &= ~missing  # a NaN default is "unknown", not an error
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{_where(path, row, column)}: not a finite number: {frame[column].iat[row]!r}"
        )
    return values


def _timestamps(
    frame: pd.DataFrame, column: str, path: Path, *, blank: np.ndarray | None = None
) -> np.ndarray:
    """Unix seconds as integers, ISO-8601 date/time strings (UTC if no zone), or a Parquet
    timestamp column (whose integers are ns or us, never seconds). A blank cell is an error,
    or takes its row of `blank` for an optional column."""
    if blank is not None and column not in frame.columns:
        return blank.astype(np.int64)
    raw = frame[column]
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw.dtype):
        aware = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
        known = aware.notna().to_numpy()
        seconds = np.full(len(raw), np.nan)
        seconds[known] = unix_seconds(aware[known])
    else:
        numeric = pd.to_numeric(raw, errors="coerce")
        parsed = pd.to_datetime(
            raw.where(numeric.isna()), errors="coerce", utc=True, format="ISO8601"
        )
        seconds = numeric.to_numpy(dtype=np.float64, copy=True)
        from_text = numeric.isna().to_numpy() & parsed.notna().to_numpy()
        seconds[from_text] = unix_seconds(parsed[from_text])
    if blank is not None:
        missing = _blank_cells(frame, column)
        seconds[missing] = blank[missing]
    bad = ~np.isfinite(seconds)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{_where(path, row, column)}: "
            f"not a timestamp (Unix seconds or ISO 8601): {raw.iat[row]!r}"
        )
    return seconds.astype(np.int64)


def save_dataset_dir(
    dataset: Dataset,
    directory: str | Path,
    file_format: str = "parquet",
    leave_out_item_columns: tuple[str, ...] = (),
) -> Path:
    """Write a dataset in the files' schema, readable by `load_dataset_dir`; optional item
    columns in `leave_out_item_columns` are not written (reading back gives their defaults)."""
    if file_format not in ("parquet", "csv"):
        raise ValueError(f"file_format must be 'parquet' or 'csv', got {file_format!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, frame in (
        ("events", dataset.events),
        ("items", dataset.items),
        ("users", dataset.users),
    ):
        if stem == "events":
            frame = frame.assign(event_type=frame["event_type"].astype(str))
        if stem == "items":
            frame = frame.drop(columns=list(leave_out_item_columns))
        if file_format == "csv":
            frame.to_csv(directory / f"{stem}.csv", index=False)
        else:
            frame.to_parquet(directory / f"{stem}.parquet", index=False)
    return directory
