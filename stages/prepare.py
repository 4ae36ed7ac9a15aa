"""DVC stage `prepare`: a thin CLI over genbench.pipeline.run_prepare (see `genbench prepare --help`)."""

import sys

from genbench.cli import main

sys.exit(main(["prepare", *sys.argv[1:]]))
