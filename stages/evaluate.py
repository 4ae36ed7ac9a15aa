"""DVC stage `evaluate`: a thin CLI over genbench.pipeline.run_evaluate (see `genbench evaluate --help`)."""

import sys

from genbench.cli import main

sys.exit(main(["evaluate", *sys.argv[1:]]))
