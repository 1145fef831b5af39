"""Adding a generator is one new file and the config (README, "Extending"): the file
registers its bundle component and its generator; the config imports it and names it."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from candidates.base import GENERATORS
from pipelines.nightly import run_nightly
from recsys.components import COMPONENTS
from recsys.new_items import NewItems
from serving.holder import BundleHolder
from serving.pipeline import RecommendRequest
from tests.conftest import shop_config

# The README's example, word for word: the newest items of the catalogue.
NEWEST = textwrap.dedent(
    '''
    """The newest items of the catalogue, as a candidate generator."""

    from pathlib import Path

    import numpy as np

    from candidates.base import register_generator
    from recsys.components import Component, register_component
    from recsys.context import Candidates


    class Newest:
        def __init__(self, order: np.ndarray) -> None:
            self.order = order  # item indices, newest first
            self.name = "newest"

        def fit(given) -> "Newest":
            created = given.data.item_created
            return Newest(np.argsort(-created, kind="stable").astype(np.int64))

        def save(self, directory: Path) -> None:
            np.save(directory / "order.npy", self.order)

        def load(directory: Path, config) -> "Newest":
            return Newest(np.load(directory / "order.npy"))

        def grow(self, new) -> "Newest":  # items joining between nightlies are the newest
            joined = np.arange(new.end - 1, new.first - 1, -1, dtype=np.int64)
            return Newest(np.concatenate([joined, self.order]))

        def generate(self, ctx, budget: int) -> Candidates:
            items = self.order[:budget]
            scores = -np.arange(len(items), dtype=np.float32)  # best first
            return Candidates(items, scores, self.name)


    register_component(Component("newest", fit=Newest.fit, load=Newest.load, grow=Newest.grow))
    register_generator("newest", lambda bundle, config, name: bundle.newest)
    '''
)


@pytest.fixture
def registries_restored():
    """The toy registers itself into process-wide registries: put them back afterwards."""
    components, generators = dict(COMPONENTS), dict(GENERATORS)
    yield
    COMPONENTS.clear()
    COMPONENTS.update(components)
    GENERATORS.clear()
    GENERATORS.update(generators)
    sys.modules.pop("toy_newest", None)


def test_a_generator_in_one_new_file_is_trained_saved_and_served(
    tmp_path, shop_dir, monkeypatch, registries_restored
):
    (tmp_path / "toy_newest.py").write_text(NEWEST)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = shop_config(tmp_path, shop_dir)
    config = config.replace(
        extensions={"modules": ["toy_newest"]},
        serving={"generators": [*config.serving.generators, "newest"]},
        ranking={"stages": []},
    )
    version = run_nightly(config, show_progress=False).manifest.version
    assert (tmp_path / "artifacts" / version / "newest" / "order.npy").exists()
    holder = BundleHolder(config)
    assert holder.refresh()
    pipeline = holder.pipeline()
    budget = config.serving.budget_of("newest")
    proposed = set(pipeline.bundle.items.ids[pipeline.bundle.newest.order[:budget]])
    answer = pipeline.recommend(RecommendRequest(user_id="never-seen", k=500))
    by_newest = {item.item_id for item in answer.items if "newest" in item.sources}
    assert by_newest, "the toy generator's items reached the served list"
    assert by_newest <= proposed
    # items that join between nightlies: the toy says they are the newest
    factors = pipeline.bundle.als.model.item_factors
    first = len(pipeline.bundle.items)
    grown = pipeline.bundle.grown(NewItems(np.array(["a", "b"], object), factors[:2], first, 0))
    assert list(grown.newest.order[:3]) == [first + 1, first, pipeline.bundle.newest.order[0]]


def test_an_extension_that_cannot_be_imported_is_a_clear_error(tmp_path, shop_dir):
    from pipelines.build import build_bundle
    from pipelines.loaders import load_dataset_dir

    config = shop_config(tmp_path, shop_dir).replace(extensions={"modules": ["no_such_module"]})
    with pytest.raises(ValueError, match="extensions.modules: cannot import 'no_such_module'"):
        build_bundle(load_dataset_dir(shop_dir), config)
