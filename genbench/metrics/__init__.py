"""Metrics. Each is computed with a library where one exists (torchmetrics, scikit-learn) and every
record stores its protocol, so that two numbers obtained differently are never ranked together.

The evaluate stage writes one record per dataset and model, `metrics/<dataset>/<model>.json`:

    {
      "dataset": "digits", "model": "vae", "kind": "generative" | "discriminative" | "anomaly",
      "capabilities": ["generate", "density", "classify", "detect", "represent"],   # those it has
      "hyperparameters": {...},
      "cost": {"train_seconds": 12.3, "sample_seconds": 0.4, "evaluate_seconds": 2.0,
               "anomaly_seconds": 30.1, "total_seconds": 44.8, "device": "cpu"},
      "classification": {"accuracy": 0.96, "log_loss": 0.13, "ece": 0.02, "ece_bins": 15,
                         "split": "test", "n": 360},
      "likelihood": {"nll_nats": 28.1, "bits_per_dim": 0.63, "space": "binary" | "discrete",
                     "levels": 2, "dim": 64, "estimator": "exact" | "lower_bound" | "estimate",
                     "method": "IWAE bound, k=1000 importance samples", "samples": 1000,
                     "split": "test", "n": 360},
      "likelihood_extra": [ {same fields as "likelihood", e.g. the ELBO} ],
      "fid": {"value": 3.2, "features": "evaluator-cnn", "features_sha256": "...", "feature_dim": 64,
              "n_generated": 1000, "n_reference": 360, "reference_split": "test", "seed": 0},
      "anomaly": {"auroc_mean": 0.91, "auroc_per_class": {"0": 0.95, ...}, "normal_classes": [0, ...],
                  "protocol": "one-class (Ruff et al. 2018) ...", "score": "-log_prob", "split": "test"},
      "not_applicable": {"fid": "no sample() method", ...}   # why a section is absent
    }

A section is absent when the model lacks the capability; `not_applicable` says why.
"""
