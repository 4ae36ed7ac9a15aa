"""DVC stage `anomaly`: a thin CLI over genbench.pipeline.run_anomaly (see `genbench anomaly --help`)."""

import sys

from genbench.cli import main

sys.exit(main(["anomaly", *sys.argv[1:]]))
