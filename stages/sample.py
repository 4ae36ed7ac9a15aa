"""DVC stage `sample`: a thin CLI over genbench.pipeline.run_sample (see `genbench sample --help`).

Runs through genbench.launcher, which forks it from a warm interpreter when one is running."""

import sys

from genbench.launcher import run_stage

sys.exit(run_stage("sample", sys.argv[1:]))
