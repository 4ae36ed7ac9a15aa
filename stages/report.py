"""DVC stage `report`: a thin CLI over genbench.pipeline.run_report (see `genbench report --help`)."""

import sys

from genbench.cli import main

sys.exit(main(["report", *sys.argv[1:]]))
