"""Same lists before and after a refactor: `recsys nightly` and `Recommend` for every user of
MovieLens-100k (or --config's data), at this checkout and at a git revision, compared.

    python bench/same_lists.py REVISION [NEW_REVISION] [--config FILE.toml] [--k 20]

Each side runs in its own process and its own checkout (a temporary git worktree for each
revision; this checkout, uncommitted changes included, when NEW_REVISION is not given) with
the same configuration; a nightly is deterministic (one-thread HNSW build,
seeded trainers), so any difference in a list is a change of behaviour. Prints the share
of users whose lists are identical, and the first differences.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs inside a checkout; only names every revision since the layered refactor shares.
DUMP = """
import json, sys
from pipelines.nightly import run_nightly
from recsys.config import load_config
from serving.holder import BundleHolder
from serving.pipeline import RecommendRequest


def main():
    config = load_config(sys.argv[1] or None).replace(
        artifacts={"root": sys.argv[4] + "/artifacts"},
        data={"cache_dir": sys.argv[5]},
        evaluation={"report_dir": sys.argv[4] + "/reports"},
    )
    run_nightly(config, show_progress=False)
    holder = BundleHolder(config)
    assert holder.refresh(), "no bundle"
    pipeline = holder.pipeline()
    k = int(sys.argv[3])
    lists = {}
    for user in (str(u) for u in pipeline.bundle.users.ids):
        answer = pipeline.recommend(RecommendRequest(user_id=user, k=k))
        lists[user] = [item.item_id for item in answer.items]
    json.dump(lists, open(sys.argv[2], "w"))


if __name__ == "__main__":  # compiling and probing run child processes that import this
    main()
"""


def dump(checkout: Path, config: str, work: Path, k: int) -> dict[str, list[str]]:
    work.mkdir()
    script, out = work / "dump.py", work / "lists.json"
    script.write_text(DUMP)
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cache = str(REPO / ".cache" / "recsys")
    subprocess.run(
        [sys.executable, str(script), config, str(out), str(k), str(work), cache],
        cwd=checkout,
        env=env,
        check=True,
    )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("new_revision", nargs="?", help="default: this checkout as it is")
    parser.add_argument("--config", help="TOML overrides (data.source for your own files)")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="same-lists-"))
    checkouts = {"old": checkout_of(args.revision, work / "old-checkout")}
    checkouts["new"] = (
        checkout_of(args.new_revision, work / "new-checkout") if args.new_revision else REPO
    )
    try:
        lists = {}
        config = str(Path(args.config).resolve()) if args.config else ""
        for name, checkout in checkouts.items():
            print(f"nightly and lists at {name} ({checkout})", flush=True)
            lists[name] = dump(checkout, config, work / name, args.k)
        users = sorted(set(lists["old"]) | set(lists["new"]))
        same = [u for u in users if lists["old"].get(u) == lists["new"].get(u)]
        print(f"identical lists: {len(same)} of {len(users)} users ({len(same) / len(users):.1%})")
        for user in [u for u in users if u not in set(same)][:5]:
            print(f"  {user}: {lists['old'].get(user)} -> {lists['new'].get(user)}")
    finally:
        for checkout in checkouts.values():
            if checkout != REPO:
                subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=REPO)
        shutil.rmtree(work, ignore_errors=True)


def checkout_of(revision: str, path: Path) -> Path:
    """A worktree of `revision`, with the generated stubs (not in git) copied in."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), revision],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    for generated in (REPO / "protos" / "recsys" / "v1").glob("*_pb2*"):
        shutil.copy(generated, path / "protos" / "recsys" / "v1")
    return path


if __name__ == "__main__":
    main()
