"""DVC stage `evaluator`: a thin CLI over genbench.pipeline.run_evaluator (see `genbench evaluator --help`).

Runs through genbench.launcher, which forks it from a warm interpreter when one is running."""

import sys

from genbench.launcher import run_stage

sys.exit(run_stage("evaluator", sys.argv[1:]))
