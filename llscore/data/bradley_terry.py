"""Bradley–Terry scores with standard errors, fitted from pairwise votes (ties count as half a win).

Used to turn annotator votes into per-image quality scores (LL-Bench-mini writes them to
`bradley_terry_quality_scores.csv`), so scores always come from the votes, never from a hidden truth.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, sparse
from scipy.sparse.csgraph import connected_components
from scipy.special import expit


def fit_bradley_terry(
    item_index_a,
    item_index_b,
    outcome,
    n_items: int,
    groups=None,
    l2: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood Bradley–Terry strengths (log-odds units) and their standard errors.

    `outcome[k]` is 1 when item `item_index_a[k]` won, 0 when it lost and 0.5 for a tie; P(a beats b) =
    sigmoid(s_a - s_b).

    Gauge: comparisons only identify differences within a connected set of items, so each set has a free
    offset. The tiny L2 prior `l2 * |s|^2 / 2` (which also keeps always-winning items finite) pins that offset
    at the mean: the optimum has zero mean on every connected component, because the likelihood gradient
    sums to zero over a component. Scores are then centred within each of `groups` (labels of items sharing
    a gauge, e.g. source images; default: the connected components of the comparison graph), so a score reads
    as "better or worse than the average item of its group". `std` is the standard error of the centred
    score: the centring projection of the inverse Fisher information (plus prior) of its group. Items with no
    comparison get score 0 and std inf.
    """
    a = np.asarray(item_index_a, dtype=np.int64)
    b = np.asarray(item_index_b, dtype=np.int64)
    y = np.asarray(outcome, dtype=np.float64)
    if not (a.shape == b.shape == y.shape) or a.ndim != 1:
        raise ValueError(
            f"item_index_a, item_index_b and outcome must be 1-d of one length; got {a.shape}, {b.shape}, {y.shape}"
        )
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_items):
        raise ValueError(f"item indices must lie in [0, {n_items})")
    if np.any(a == b):
        raise ValueError("an item cannot be compared with itself")
    if not np.all((y >= 0) & (y <= 1)):
        raise ValueError("outcome must lie in [0, 1] (1: a wins, 0: b wins, 0.5: tie)")

    def objective(s: np.ndarray) -> tuple[float, np.ndarray]:
        d = s[a] - s[b]
        loss = np.sum(y * np.logaddexp(0.0, -d) + (1.0 - y) * np.logaddexp(0.0, d)) + 0.5 * l2 * s @ s
        g = expit(d) - y
        grad = np.bincount(a, g, n_items) - np.bincount(b, g, n_items) + l2 * s
        return loss, grad

    fit = optimize.minimize(
        objective, np.zeros(n_items), jac=True, method="L-BFGS-B", options={"gtol": 1e-9, "maxiter": 10_000}
    )
    scores = fit.x

    d = scores[a] - scores[b]
    w = expit(d) * expit(-d)
    fisher = sparse.coo_matrix(
        (np.concatenate([w, w, -w, -w]), (np.concatenate([a, b, a, b]), np.concatenate([a, b, b, a]))),
        shape=(n_items, n_items),
    ).tocsr()
    if groups is None:
        labels = connected_components(fisher != 0, directed=False)[1]
    else:
        labels = np.unique(np.asarray(groups), return_inverse=True)[1]
        if labels.shape != (n_items,):
            raise ValueError(f"groups must give one label per item ({n_items}); got shape {labels.shape}")
        if np.any(labels[a] != labels[b]):
            raise ValueError("every comparison must be between items of the same group")

    compared = np.bincount(a, minlength=n_items) + np.bincount(b, minlength=n_items) > 0
    scores[~compared] = 0.0
    std = np.full(n_items, np.inf)
    for label in np.unique(labels[compared]):
        members = np.flatnonzero((labels == label) & compared)
        scores[members] -= scores[members].mean()
        m = members.size
        centre = np.eye(m) - 1.0 / m
        cov = centre @ np.linalg.inv(fisher[members][:, members].toarray() + l2 * np.eye(m)) @ centre
        std[members] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return scores, std
