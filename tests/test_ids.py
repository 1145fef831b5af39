import numpy as np
import pandas as pd

from recsys.ids import UNKNOWN, IdMap


def test_lookup_both_ways_and_unknown():
    ids = IdMap.from_values(["b", "a", "b", "c"])
    assert list(ids.ids) == ["b", "a", "c"]  # first-appearance order
    np.testing.assert_array_equal(ids.to_index(["c", "zz", "b"]), [2, UNKNOWN, 0])
    assert ids.index_of("a") == 1 and ids.index_of("nope") == UNKNOWN
    assert list(ids.to_external(np.array([2, 0]))) == ["c", "b"]


def test_integers_and_strings_are_the_same_external_id():
    ids = IdMap.from_values(np.array([10, 20, 10]))
    np.testing.assert_array_equal(ids.to_index(["20", "10"]), [1, 0])


def test_extending_never_renumbers():
    base = IdMap.from_values(["x", "y"])
    grown = IdMap.from_values(["z", "y", "w"], base=base)
    assert list(grown.ids) == ["x", "y", "z", "w"]
    np.testing.assert_array_equal(grown.to_index(["x", "y"]), base.to_index(["x", "y"]))


def test_save_load_round_trip(tmp_path):
    ids = IdMap.from_values(["ü", "1", "a b", ""])
    ids.save(tmp_path / "ids.parquet")
    loaded = IdMap.load(tmp_path / "ids.parquet")
    assert list(loaded.ids) == list(ids.ids)
    assert loaded.index_of("a b") == 2


def test_categorical_ids_take_the_code_path_with_the_same_answer():
    values = pd.Series(pd.Categorical(["b", "a", "b", "c"], categories=["a", "b", "c", "z"]))
    mapped = IdMap.from_values(values)
    assert list(mapped.ids) == ["b", "a", "c"]  # first appearance, unused category "z" absent
    assert mapped.to_index(values).tolist() == [0, 1, 0, 2]
    other = pd.Series(pd.Categorical(["z", "c", None]))
    assert mapped.to_index(other).tolist() == [-1, 2, -1]
    assert list(IdMap.from_values(values.astype(str)).ids) == list(mapped.ids)
