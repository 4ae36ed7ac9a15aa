"""DVC stage `report`: a thin CLI over genbench.pipeline.run_report (see `genbench report --help`).

Runs through genbench.launcher, which forks it from a warm interpreter when one is running."""

import sys

from genbench.launcher import run_stage

sys.exit(run_stage("report", sys.argv[1:]))
