"""Our metrics against scikit-learn's implementations of the same definitions."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import metrics as skm

from recsys.metrics import auc, logloss, mae, ndcg_at_k, rmse


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def test_prediction_metrics_match_sklearn(rng):
    y_true = rng.integers(0, 2, 500)
    y_prob = np.clip(rng.random(500) * 0.8 + 0.2 * y_true, 1e-6, 1 - 1e-6)
    y_prob[:50] = 0.5  # ties
    ratings, predicted = rng.uniform(1, 5, 300), rng.uniform(1, 5, 300)
    assert auc(y_true, y_prob) == pytest.approx(skm.roc_auc_score(y_true, y_prob), abs=1e-12)
    assert logloss(y_true, y_prob) == pytest.approx(skm.log_loss(y_true, y_prob), rel=1e-9)
    assert rmse(ratings, predicted) == pytest.approx(
        np.sqrt(skm.mean_squared_error(ratings, predicted))
    )
    assert mae(ratings, predicted) == pytest.approx(skm.mean_absolute_error(ratings, predicted))


@pytest.mark.parametrize("k", [1, 5, 10])
def test_ndcg_matches_sklearn_on_binary_relevance(rng, k):
    n_users, n_items = 200, 60
    relevant = (rng.random((n_users, n_items)) < 0.08).astype(np.float64)
    relevant[relevant.sum(axis=1) == 0, 0] = 1.0  # sklearn scores users without positives as 0
    recommended = np.argsort(-rng.random((n_users, n_items)), axis=1)[:, :k]
    # scores that put our list first, in order, and everything else far below
    scores = np.zeros((n_users, n_items))
    np.put_along_axis(
        scores, recommended, np.arange(k, 0, -1, dtype=np.float64)[None, :].repeat(n_users, 0), 1
    )
    ours = ndcg_at_k(recommended.astype(np.int64), sp.csr_matrix(relevant), k)
    assert ours == pytest.approx(skm.ndcg_score(relevant, scores, k=k), rel=1e-9)
