"""DVC stage `prepare`: a thin CLI over genbench.pipeline.run_prepare (see `genbench prepare --help`).

Runs through genbench.launcher, which forks it from a warm interpreter when one is running."""

import sys

from genbench.launcher import run_stage

sys.exit(run_stage("prepare", sys.argv[1:]))
