"""Sample-quality metrics beyond FID: precision / recall / density / coverage, memorisation and the
Classification Accuracy Score.

- `prdc` works on feature vectors (the evaluator network's, see `genbench.evaluator`):
  improved precision and recall (Kynkäänniemi et al. 2019, "Improved precision and recall metric
  for assessing generative models") estimate each manifold as the union of balls around its points
  with radius the distance to the point's k-th nearest neighbour; density and coverage (Naeem et al.
  2020, "Reliable fidelity and diversity metrics for generative models") count how many real balls
  hold each sample, and how many real balls hold at least one sample.
- `memorisation` compares, in pixel space, how close samples come to their nearest training image
  with how close held-out real images come to theirs (a nearest-neighbour copy test in the spirit
  of the data-copying tests of Meehan et al. 2020).
- `classification_accuracy_score` (CAS; Ravuri & Vinyals 2019, "Classification accuracy score for
  conditional generative models") trains the evaluator architecture on generated samples only and
  reports its accuracy on the real test split.

Written by hand: torchmetrics has no PRDC, memorisation or CAS; the reference `prdc` package
(Naeem et al.) is numpy-only, builds full distance matrices and prints, so the few lines are
reimplemented here in batched torch and tested against it.
"""

from __future__ import annotations

import torch
from torch import nn

from genbench.data import Split

BATCH_SIZE = 1024  # rows of a distance matrix computed at once


# --- features ------------------------------------------------------------------------------------


@torch.no_grad()
def evaluator_features(network: nn.Module, images: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """The network's `features(x)` of every image, in batches, in eval mode: (N, feature_dim) on the CPU."""
    network.eval()
    device = next(network.parameters()).device
    return torch.cat([network.features(images[i:i + batch_size].float().to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


# --- precision, recall, density, coverage --------------------------------------------------------


def _kth_neighbour_radii(features: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest neighbour within the set (itself excluded)."""
    if len(features) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} points, got {len(features)}")
    # the (k+1)-th smallest distance in a row, the point itself being the first (distance 0)
    return torch.cat([torch.cdist(features[i:i + batch_size], features).kthvalue(k + 1, dim=1).values
                      for i in range(0, len(features), batch_size)])


def prdc(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 5, *,
         batch_size: int = BATCH_SIZE) -> dict:
    """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

    With r(x) the distance from x to its k-th nearest neighbour in its own set, B(x) the open ball of
    radius r(x) around x, real points X_1..X_N and fake points Y_1..Y_M:

        precision = 1/M sum_j 1[Y_j in some B(X_i)]            (fakes on the real manifold)
        recall    = 1/N sum_i 1[X_i in some B(Y_j)]            (reals on the fake manifold)
        density   = 1/(kM) sum_j sum_i 1[Y_j in B(X_i)]        (~1 when fake ~ real, unbounded)
        coverage  = 1/N sum_i 1[some Y_j in B(X_i)]            (real balls holding a fake)

    Strict inequalities, as in the reference implementation (the `prdc` package of Naeem et al.).
    Computed in float64, `batch_size` fake points at a time, so no N x M matrix is held at once.
    """
    real = torch.as_tensor(real_features).double().flatten(1)
    fake = torch.as_tensor(fake_features).double().flatten(1).to(real.device)
    real_radii = _kth_neighbour_radii(real, k, batch_size)  # (N,)
    fake_radii = _kth_neighbour_radii(fake, k, batch_size)  # (M,)
    in_real_balls = torch.zeros(len(fake), dtype=torch.long, device=real.device)  # per fake: how many B(X_i) hold it
    real_in_fake_manifold = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    nearest_fake = torch.full((len(real),), float("inf"), dtype=real.dtype, device=real.device)
    for start in range(0, len(fake), batch_size):
        stop = start + batch_size
        distances = torch.cdist(real, fake[start:stop])  # (N, b)
        in_real_balls[start:stop] = (distances < real_radii[:, None]).sum(0)
        real_in_fake_manifold |= (distances < fake_radii[None, start:stop]).any(1)
        nearest_fake = torch.minimum(nearest_fake, distances.min(1).values)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(real_in_fake_manifold.double().mean()),
        "density": float(in_real_balls.double().mean() / k),
        "coverage": float((nearest_fake < real_radii).double().mean()),
        "k": k,
        "n_real": len(real),
        "n_fake": len(fake),
    }


def prdc_images(network: nn.Module, real: torch.Tensor, fake: torch.Tensor, k: int = 5, *,
                batch_size: int = 500) -> dict:
    """`prdc` on the evaluator network's features of real and generated images."""
    return prdc(evaluator_features(network, real, batch_size=batch_size),
                evaluator_features(network, fake, batch_size=batch_size), k)


# --- memorisation ---------------------------------------------------------------------------------


def _nearest_distances(queries: torch.Tensor, reference: torch.Tensor, batch_size: int) -> torch.Tensor:
    """L2 distance from each flattened query image to its nearest reference image, in float64 blocks
    (float32 cdist loses the small distances of near-copies to cancellation)."""
    queries, reference = queries.flatten(1), reference.flatten(1)
    out = torch.empty(len(queries), dtype=torch.float64)
    for q in range(0, len(queries), batch_size):
        block = queries[q:q + batch_size].double()
        nearest = torch.full((len(block),), float("inf"), dtype=torch.float64)
        for r in range(0, len(reference), batch_size):
            distances = torch.cdist(block, reference[r:r + batch_size].double())
            nearest = torch.minimum(nearest, distances.min(1).values)
        out[q:q + batch_size] = nearest
    return out


def memorisation(train_images: torch.Tensor, test_images: torch.Tensor, samples: torch.Tensor,
                 quantile: float = 0.5, *, batch_size: int = BATCH_SIZE) -> dict:
    """Share of samples closer to their nearest training image than a typical held-out image is.

    Pixel-space L2 nearest-neighbour distances to the training set: the threshold is the `quantile`
    of the test images' distances (the median by default), and the share is the fraction of samples
    whose distance is below it. Held-out real data scores `quantile` by construction, copies of
    training images score 1, and samples far from all training images score 0.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    test_distances = _nearest_distances(test_images.cpu(), train_images.cpu(), batch_size)
    sample_distances = _nearest_distances(samples.cpu(), train_images.cpu(), batch_size)
    threshold = float(torch.quantile(test_distances, quantile))
    return {
        "share": float((sample_distances < threshold).double().mean()),
        "threshold": threshold,
        "quantile": quantile,
        "reference_share": quantile,
        "median_sample_distance": float(sample_distances.median()),
        "median_test_distance": float(test_distances.median()),
        "n_samples": len(samples),
        "n_train": len(train_images),
        "n_test": len(test_images),
        "description": f"share of samples whose nearest training image (pixel L2) is closer than the "
                       f"{quantile:g}-quantile of the test images' nearest-training distances; "
                       f"held-out data scores {quantile:g}, copies of training images 1",
    }


# --- classification accuracy score ----------------------------------------------------------------


def classification_accuracy_score(samples: torch.Tensor, labels: torch.Tensor, test: Split, *,
                                  image_shape: tuple[int, int, int], num_classes: int, feature_dim: int,
                                  epochs: int, batch_size: int, lr: float, seed: int,
                                  device: torch.device) -> dict:
    """CAS (Ravuri & Vinyals 2019): accuracy on the real test split of a classifier trained on
    generated samples only, labelled with the classes they were conditioned on.

    The classifier is the evaluator architecture trained by `genbench.evaluator.train_evaluator`,
    so with the evaluator's settings a real-data classifier's test accuracy is the reference.
    """
    from torchmetrics.functional.classification import multiclass_accuracy

    from genbench.evaluator import predict, train_evaluator

    samples, labels = torch.as_tensor(samples).float().cpu(), torch.as_tensor(labels).long().cpu()
    if tuple(samples.shape[1:]) != tuple(image_shape) or len(labels) != len(samples):
        raise ValueError(f"CAS needs samples of shape (n, {', '.join(map(str, image_shape))}) and n labels, "
                         f"got samples {tuple(samples.shape)} and labels {tuple(labels.shape)}")
    generated = Split(samples, labels, test.levels, num_classes, "generated")
    net, _ = train_evaluator(generated, feature_dim=feature_dim, epochs=epochs, batch_size=batch_size,
                             lr=lr, seed=seed, device=device)
    predictions = predict(net, test.x).argmax(1)
    accuracy = float(multiclass_accuracy(predictions, test.y, num_classes=num_classes, average="micro"))
    return {
        "accuracy": accuracy,
        "correct": (predictions == test.y).double().numpy(),  # per test image, for the bootstrap over test images
        "n_train_generated": len(samples),
        "n_test": len(test),
        "epochs": epochs,
        "description": f"Classification Accuracy Score (Ravuri & Vinyals 2019): accuracy on the real "
                       f"{test.name} split ({len(test)} images) of the evaluator CNN architecture trained "
                       f"for {epochs} epochs on {len(samples)} generated samples only, labelled by their "
                       f"conditioning class",
    }
