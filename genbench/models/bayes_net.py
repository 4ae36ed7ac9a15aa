"""Bayesian network over binarised pixels with a learned tree structure (Chow & Liu 1968).

Each class c has a tree-shaped network over the D pixels: p(x | c) = p(x_r | c) prod_{i != r}
p(x_i | x_pa(i), c). The tree is the maximum spanning tree of the pairwise mutual information
between pixels (the Chow-Liu tree, the maximum-likelihood tree), found with scipy's
`minimum_spanning_tree` on shifted negative mutual information; every probability table is
smoothed with a symmetric Dirichlet prior (`alpha` pseudo-counts per cell of each pairwise 2 x 2
table, so that all the pairwise and single-pixel tables are consistent and the tree distribution
does not depend on the root). Two structures (`structure`):
  "multinet": one Chow-Liu tree per class, from that class's mutual information (a Chow-Liu
    Bayesian multinet, Friedman, Geiger & Goldszmidt 1997);
  "tan": one tree shared by all classes, from the class-conditional mutual information
    I(x_i; x_j | c), with class-specific tables (tree-augmented naive Bayes, same paper).
Both add the class prior p(c) and classify by Bayes' rule; `class_conditional: false` fits one
tree to all the images.

Density space: "binary". The fit reads `binarized_copies` seeded stochastic binarisations of the
training images (each copy weighted 1 / binarized_copies, so `alpha` stays a per-image
pseudo-count), approximating dynamic binarisation; `binarized_copies: 0` uses the expected counts
instead (the limit of infinitely many copies: E[x_i x_j] = q_i q_j for i != j, E[x_i] = q_i for
intensities q, since each pixel is binarised independently), which is cheaper on 28 x 28 data.
`log_prob` is exact: log sum_c p(c) p(x | c), each p(x | c) a sum of log tree factors. `predict_proba` reads the images as they are
(`predict_input`): "expected" scores the expected log-joint under the stochastic binarisation,
E_{x ~ Bernoulli(image)}[log p(c) + log p(x | c)], in closed form since the pixels of the image are
drawn independently; "threshold" binarises at 0.5. Samples are drawn ancestrally (root first, each
parent before its children) with the torch generator.

Written by hand: no well-kept library learns Chow-Liu trees on thousands of images cheaply (it is a
few vectorised numpy lines: pairwise counts by one matrix product, then scipy's spanning tree).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree
from scipy.special import logsumexp

from genbench.data import Split, binarize
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("bayes_net")
class BayesNet(Model):
    kind = "generative"
    likelihood_space = "binary"
    constraints = {
        "alpha": {"low": 1e-10},
        "binarized_copies": {"low": 0},
        "structure": {"choices": ("multinet", "tan")},
        "predict_input": {"choices": ("expected", "threshold")},
    }
    fast_params = {"binarized_copies": 1}

    def __init__(self, alpha: float = 0.1, binarized_copies: int = 10, structure: str = "multinet",
                 predict_input: str = "expected", class_conditional: bool = True):
        self.alpha = alpha
        self.binarized_copies = binarized_copies
        self.structure = structure
        self.predict_input = predict_input
        self.class_conditional = class_conditional

    @property
    def conditional(self) -> bool:
        return bool(self.class_conditional)

    @property
    def likelihood_info(self) -> dict:
        what = {"multinet": "one Chow-Liu tree per class", "tan": "tree-augmented naive Bayes"}[self.structure]
        if not self.class_conditional:
            what = "one Chow-Liu tree"
        return {"estimator": "exact",
                "method": f"exact probability of a tree Bayesian network over binary pixels ({what}, "
                          "Chow & Liu 1968), log sum_c p(c) p(x|c)",
                "samples": None}

    # --- fitting ---------------------------------------------------------------------------------
    def fit(self, train: Split, *, seed: int) -> "BayesNet":
        self.image_shape_ = train.image_shape
        self.num_classes_ = train.num_classes if self.class_conditional else 1
        labels = train.y.numpy() if self.class_conditional else np.zeros(len(train), np.int64)
        self.classes_ = np.unique(labels)
        self.log_prior_ = np.log(np.array([np.mean(labels == c) for c in self.classes_]))
        counts = [_PairCounts(train.dim) for _ in self.classes_]
        if self.binarized_copies == 0:  # expected counts under the stochastic binarisation
            intensities = flat(train.x)
            for k, c in enumerate(self.classes_):
                counts[k].add(intensities[labels == c], weight=1.0, expected=True)
        else:
            gen = torch.Generator().manual_seed(seed)
            for _ in range(self.binarized_copies):
                data = flat(binarize(train.x, gen))
                for k, c in enumerate(self.classes_):
                    counts[k].add(data[labels == c], weight=1.0 / self.binarized_copies)
        shared = None
        if self.structure == "tan" and len(self.classes_) > 1:  # I(x_i; x_j | c) = sum_c p(c) I_c(x_i; x_j)
            shared = _chow_liu_tree(sum(np.exp(lp) * _mutual_information(*count.tables(self.alpha))
                                        for lp, count in zip(self.log_prior_, counts)))
        orders, parents, cpts = [], [], []
        for count in counts:  # one class at a time: the (D, D, 2, 2) tables are the big arrays
            pairs, marginals = count.tables(self.alpha)
            order, parent = shared if shared is not None else _chow_liu_tree(_mutual_information(pairs, marginals))
            orders.append(order)
            parents.append(parent)
            cpts.append(_log_cpt(pairs, marginals, parent))
        self.order_ = np.stack(orders)  # (classes, D): parents before children
        self.parent_ = np.stack(parents)  # (classes, D); the root is its own parent
        self.log_cpt_ = np.stack(cpts)  # (classes, D, parent value, value)
        self.history_ = []
        return self

    # --- scoring ---------------------------------------------------------------------------------
    def _class_log_likelihood(self, data: np.ndarray, expected: bool = False) -> np.ndarray:
        """log p(x | c) (or its expectation over x ~ Bernoulli(data)), shape (N, len(classes_))."""
        d = data.shape[1]
        out = np.empty((len(data), len(self.classes_)))
        pixels = np.arange(d)
        for k in range(len(self.classes_)):
            cpt, parent = self.log_cpt_[k], self.parent_[k]
            if expected:
                q_child = np.stack([1 - data, data], axis=2)  # (N, D, 2): q(x_i = b)
                q_parent = q_child[:, parent]  # (N, D, 2): q(x_pa(i) = a)
                out[:, k] = np.einsum("nda,ndb,dab->n", q_parent, q_child, cpt)
            else:
                xb = data.astype(np.int64)
                out[:, k] = cpt[pixels[None], xb[:, parent], xb].sum(1)
        return out

    def _joint(self, data: np.ndarray, expected: bool = False) -> np.ndarray:
        joint = np.full((len(data), self.num_classes_), -np.inf)
        joint[:, self.classes_] = self._class_log_likelihood(data, expected) + self.log_prior_
        return joint

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        check_fitted(self, "log_cpt_")
        return torch.from_numpy(logsumexp(self._joint(flat(x) >= 0.5), axis=1))

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "log_cpt_")
        if not self.class_conditional:
            raise AttributeError("predict_proba needs class_conditional: true")
        data = flat(x)
        if self.predict_input == "threshold":
            joint = self._joint(data >= 0.5)
        else:
            joint = self._joint(data, expected=True)
        return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))

    # --- sampling --------------------------------------------------------------------------------
    def sample(self, n: int, *, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        check_fitted(self, "log_cpt_")
        if y is None:
            index = torch.multinomial(torch.from_numpy(np.exp(self.log_prior_)), n, replacement=True,
                                      generator=generator)
        else:
            y = np.asarray(torch.as_tensor(y).cpu())
            found = np.searchsorted(self.classes_, y)
            if len(y) != n or not np.all(self.classes_[np.clip(found, 0, len(self.classes_) - 1)] == y):
                raise ValueError(f"bayes_net was fitted on classes {self.classes_.tolist()}; "
                                 f"cannot sample y={np.unique(y).tolist()} (n={n})")
            index = torch.from_numpy(found)
        d = self.log_cpt_.shape[1]
        out = torch.zeros(n, d, dtype=torch.float64)
        uniform = torch.rand(n, d, generator=generator, dtype=torch.float64)
        p_one = torch.from_numpy(np.exp(self.log_cpt_[..., 1]))  # (classes, D, parent value)
        for k in range(len(self.classes_)):
            rows = torch.nonzero(index == k).flatten()
            if not len(rows):
                continue
            x = out[rows]
            for i in self.order_[k]:  # ancestral: the root first, every parent before its children
                parent_value = x[:, self.parent_[k, i]].long()  # the root's rows are equal: any value
                x[:, i] = (uniform[rows, i] < p_one[k, i][parent_value]).double()
            out[rows] = x
        return out.float().reshape(n, *self.image_shape_)


# --- Chow-Liu, by hand -----------------------------------------------------------------------------


class _PairCounts:
    """Weighted counts of single pixels and pixel pairs being 1, accumulated over binarised copies."""

    def __init__(self, d: int):
        self.total, self.ones, self.both = 0.0, np.zeros(d), np.zeros((d, d))

    def add(self, data: np.ndarray, weight: float, expected: bool = False) -> None:
        """Add rows of binary data, or (`expected`) the expected counts of x ~ Bernoulli(data):
        E[x_i x_j] = q_i q_j for i != j (pixels binarised independently) and E[x_i] = q_i."""
        self.total += weight * len(data)
        self.ones += weight * data.sum(0)
        both = data.T @ data
        if expected:
            np.fill_diagonal(both, data.sum(0))
        self.both += weight * both

    def tables(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed pairwise tables P[i, j, a, b] = p(x_i = a, x_j = b) and marginals m[i, a]:
        `alpha` is added to each cell of every 2 x 2 table, so that every pairwise table sums to
        the single-pixel marginals m (2 alpha per value)."""
        total, ones, n11 = self.total, self.ones, self.both
        n10 = ones[:, None] - n11
        n01 = ones[None, :] - n11
        n00 = total - n11 - n10 - n01
        counts = np.stack([np.stack([n00, n01], -1), np.stack([n10, n11], -1)], -2)  # (D, D, a, b)
        pairs = (np.maximum(counts, 0.0) + alpha) / (total + 4 * alpha)
        marginals = (np.stack([total - ones, ones], -1) + 2 * alpha) / (total + 4 * alpha)
        return pairs, marginals


def _mutual_information(pairs: np.ndarray, marginals: np.ndarray) -> np.ndarray:
    """I(x_i; x_j) in nats under the smoothed tables, (D, D) with a zero diagonal."""
    independent = marginals[:, None, :, None] * marginals[None, :, None, :]
    mutual = (pairs * (np.log(pairs) - np.log(independent))).sum((2, 3))
    np.fill_diagonal(mutual, 0.0)
    return np.maximum(mutual, 0.0)


def _chow_liu_tree(mutual: np.ndarray, root: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Maximum spanning tree of `mutual`, rooted at `root`: (BFS order, parent) with parent[root] = root.

    scipy's minimum_spanning_tree treats zeros as missing edges, so the weights are shifted to
    max + 1 - I > 0: every spanning tree has D - 1 edges, so the shift leaves the argmax unchanged.
    """
    d = len(mutual)
    if d == 1:
        return np.zeros(1, np.int64), np.zeros(1, np.int64)
    weights = np.triu(mutual.max() + 1.0 - mutual, k=1)
    tree = minimum_spanning_tree(weights)
    order, predecessors = breadth_first_order(tree, root, directed=False, return_predecessors=True)
    if len(order) != d:
        raise RuntimeError("Chow-Liu: the spanning tree does not reach every pixel")
    parent = predecessors.astype(np.int64)
    parent[root] = root
    return order.astype(np.int64), parent


def _log_cpt(pairs: np.ndarray, marginals: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """log p(x_i = b | x_pa(i) = a) as (D, a, b); the root's two rows are both its marginal."""
    d = len(parent)
    pixels = np.arange(d)
    joint = pairs[parent, pixels]  # (D, a = parent value, b = child value)
    cpt = np.log(joint) - np.log(marginals[parent])[:, :, None]
    root = parent == pixels
    cpt[root] = np.log(marginals[root])[:, None, :]
    return cpt
