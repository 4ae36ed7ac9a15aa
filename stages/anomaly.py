"""DVC stage `anomaly`: a thin CLI over genbench.pipeline.run_anomaly (see `genbench anomaly --help`).

Runs through genbench.launcher, which forks it from a warm interpreter when one is running."""

import sys

from genbench.launcher import run_stage

sys.exit(run_stage("anomaly", sys.argv[1:]))
