"""MovieLens-100k, the embedded default dataset.

The network reaches package registries only, so the data comes from a wheel that ships
it (recbole 1.2.1 carries `recbole/dataset_example/ml-100k/`). The wheel is downloaded
with `pip download --no-deps`, checked, and only the three data files are extracted into
the cache; the project never imports recbole.

Ratings become "rating" events (the value is the rating). MovieLens has no shop data, so
items get a synthetic but deterministic price, stock and set of regions, and users a
region from their zip code, so that business filters have something real to act on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.dataset import ALL_REGIONS, Dataset, normalize_events, unix_seconds
from recsys.files import sha256_file

log = logging.getLogger(__name__)

WHEEL = "recbole==1.2.1"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"
FILES_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
CATALOG_SEED = 100_000  # fixes the synthetic price/stock/regions
OUT_OF_STOCK_SHARE = 0.08
REGIONAL_ITEM_SHARE = 0.3
# Synthetic: MovieLens has none of them. The embedded default keeps them to give the business
# filters something to act on; they hide about a fifth of each user's next items (`recsys
# evaluate` reports the share), which no real shop's events would do. `recsys movielens`
# writes the data files without them: every item in stock and sold everywhere.
SHOP_COLUMNS = ("price", "stock", "regions")


class DatasetFetchError(RuntimeError):
    """The embedded dataset could not be obtained or failed its checksum."""


def load_movielens_100k(cache_dir: str | Path) -> Dataset:
    directory = ensure_movielens_files(Path(cache_dir) / "ml-100k")
    ratings = pd.read_csv(directory / "ml-100k.inter", sep="\t")
    ratings.columns = ["user_id", "item_id", "rating", "timestamp"]
    movies = pd.read_csv(directory / "ml-100k.item", sep="\t", keep_default_na=False)
    movies.columns = ["item_id", "title", "year", "genres"]
    people = pd.read_csv(directory / "ml-100k.user", sep="\t", dtype=str)
    people.columns = ["user_id", "age", "gender", "occupation", "zip_code"]

    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": ratings["user_id"],
                "item_id": ratings["item_id"],
                "event_type": "rating",
                "value": ratings["rating"],
                "timestamp": ratings["timestamp"],
            }
        )
    )
    users = pd.DataFrame(
        {
            "user_id": people["user_id"].astype(str),
            "region": people["zip_code"].map(zip_region),
            "attributes": [
                json.dumps({"age": int(a), "gender": g, "occupation": o, "zip_code": z})
                for a, g, o, z in people[["age", "gender", "occupation", "zip_code"]].itertuples(
                    index=False
                )
            ],
        }
    )
    items = _catalog(movies, sorted(set(users["region"])), int(events["timestamp"].min()))
    return Dataset(events=events, items=items, users=users, name="movielens-100k")


def zip_region(zip_code: str) -> str:
    """US zip codes start with a digit that names a region of the country; others abroad."""
    first = str(zip_code)[:1]
    return f"us-{first}" if first.isdigit() else "intl"


def _catalog(movies: pd.DataFrame, regions: list[str], first_event: int) -> pd.DataFrame:
    rng = np.random.default_rng(CATALOG_SEED)
    n = len(movies)
    price = np.round(rng.lognormal(mean=2.3, sigma=0.5, size=n), 2)
    stock = np.where(rng.random(n) < OUT_OF_STOCK_SHARE, 0, rng.integers(1, 200, size=n))
    regional = rng.random(n) < REGIONAL_ITEM_SHARE
    item_regions = [
        "|".join(sorted(rng.choice(regions, size=rng.integers(2, len(regions)), replace=False)))
        if is_regional
        else ALL_REGIONS
        for is_regional in regional
    ]
    year = pd.to_numeric(movies["year"], errors="coerce")
    created_at = pd.to_datetime(year.fillna(1900).astype(int).astype(str), format="%Y", utc=True)
    created = unix_seconds(created_at)
    created = np.where(year.isna().to_numpy(), first_event, created)
    return pd.DataFrame(
        {
            "item_id": movies["item_id"].astype(str),
            "categories": movies["genres"].astype(str).str.split().str.join("|"),
            "price": price,
            "stock": stock.astype(np.int64),
            "regions": item_regions,
            "created_at": created.astype(np.int64),
            "title": (movies["title"].astype(str) + " (" + movies["year"].astype(str) + ")"),
        }
    )


def ensure_movielens_files(directory: Path) -> Path:
    """The three data files in `directory`, fetched and verified on first use."""
    if all(
        (directory / name).is_file() and sha256_file(directory / name) == digest
        for name, digest in FILES_SHA256.items()
    ):
        return directory
    log.info("fetching MovieLens-100k from the %s wheel into %s", WHEEL, directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch:
        scratch = Path(scratch)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
            str(scratch),
            WHEEL,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(scratch.glob("recbole-*.whl"))
        if done.returncode != 0 or not wheels:
            raise DatasetFetchError(
                f"`{' '.join(command[2:])}` failed: {done.stderr.strip()[-500:]}"
            )
        if sha256_file(wheels[0]) != WHEEL_SHA256:
            raise DatasetFetchError(f"{wheels[0].name}: checksum mismatch; refusing to use it")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, digest in FILES_SHA256.items():
                data = wheel.read(MEMBER_PREFIX + name)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise DatasetFetchError(f"{name} in {wheels[0].name}: checksum mismatch")
                staged = scratch / name
                staged.write_bytes(data)
                staged.replace(directory / name)  # atomic per file; a retry re-checks all
    return directory
