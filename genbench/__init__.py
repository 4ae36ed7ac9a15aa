"""genbench: a benchmark suite for generative and discriminative models."""
