"""DVC stage `train`: a thin CLI over genbench.pipeline.run_train (see `genbench train --help`).

Runs through genbench.launcher, which forks it from a warm interpreter when one is running."""

import sys

from genbench.launcher import run_stage

sys.exit(run_stage("train", sys.argv[1:]))
