"""DVC stage `evaluate`: a thin CLI over genbench.pipeline.run_evaluate (see `genbench evaluate --help`).

Runs through genbench.launcher, which forks it from a warm interpreter when one is running."""

import sys

from genbench.launcher import run_stage

sys.exit(run_stage("evaluate", sys.argv[1:]))
