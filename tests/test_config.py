import pytest

from recsys.config import ConfigError, load_config


def test_defaults_load_with_types():
    config = load_config()
    assert config.data.source == "movielens-100k"
    assert isinstance(config.als.alpha, float)
    assert config.serving.generators[0] == "als" and "popularity" in config.serving.generators
    assert config.serving.budget_of("popularity") == 150  # from generator_budgets
    assert config.serving.budget_of("als") == config.serving.candidate_budget
    assert config.tops.windows_days == (1, 7, 30, 0)


def test_file_overrides_only_given_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        "[als]\nfactors = 8\n[serving]\nport = 6000\n[als.event_weights]\npurchase = 20\n"
    )
    config = load_config(path)
    assert (config.als.factors, config.serving.port, config.als.event_weights.purchase) == (
        8,
        6000,
        20.0,
    )
    assert config.als.iterations == load_config().als.iterations


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[als]\nfactor = 8\n", r"unknown key 'als.factor'; known keys here: factors"),
        ('[als]\nfactors = "8"\n', r"'als.factors' must be int"),
        ("[als]\nfactors = 0\n", r"'factors' must be positive"),
        ('[ann]\nbackend = "annoy"\n', r"ann.backend 'annoy' unknown; known: hnsw"),
        ("[evaluation]\nholdout_fraction = 1.5\n", r"holdout_fraction must be in \(0, 1\)"),
        ("[als]\nalpha = nan\n", r"'alpha' is NaN"),
        ("[als\n", r"not valid TOML"),
        ("[serving]\ngenerator_budgets = { als = 0 }\n", r"generator_budgets.als must be positive"),
        ("[serving]\ngenerator_budgets = { als = 1.5 }\n", r"must be a table of int values"),
        ("[tops]\nwindows_days = [7, -1]\n", r"tops.windows_days must be >= 0"),
        ("[tops]\nwindows_days = [7.5]\n", r"must be a list of int"),
        ("[tops]\ntrending_prior = 0\n", r"'trending_prior' must be positive"),
        ('[business]\nneighbor_kind = "bpr"\n', r"business.neighbor_kind 'bpr' unknown"),
        ("[i2i]\ntext_weight = 2.0\n", r"i2i.text_weight must be in \[0, 1\]"),
        ("[eals]\nfactors = -1\n", r"eals.factors must be >= 0"),
        ("[ranking]\nlater_positives = -1\n", r"later_positives must be >= 0"),
        ("[ranking]\nnext_item_grade = 31\n", r"ranking.next_item_grade must be in \[1, 30\]"),
        ('[ranking]\nrequests = "daily"\n', r"ranking.requests 'daily' unknown; known: auto"),
        ('[ranking]\nrank_orders = ["bpr"]\n', r"rank_orders: unknown order 'bpr'; known: als"),
        ("[ranking]\nrank_orders = []\n", r"rank_orders must name one or more orders"),
        ('[ranking]\nrank_orders = ["als", "als"]\n', r"rank_orders must name .* each once"),
        ("[sequence]\ncovisit_items = 0\n", r"'covisit_items' must be positive"),
        ("[sequence]\ncovisit_decay = 0\n", r"sequence.covisit_decay must be in \(0, 1\]"),
        ("[evaluation]\ncandidate_cutoffs = []\n", r"candidate_cutoffs must be positive"),
        ("[unknown]\nx = 1\n", r"unknown key 'unknown'"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_replace_validates_like_a_file():
    config = load_config()
    assert config.replace(serving={"port": 0}).serving.port == 0
    with pytest.raises(ConfigError, match="unknown key 'serving.prot'"):
        config.replace(serving={"prot": 1})
