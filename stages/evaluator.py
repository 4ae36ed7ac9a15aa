"""DVC stage `evaluator`: a thin CLI over genbench.pipeline.run_evaluator (see `genbench evaluator --help`)."""

import sys

from genbench.cli import main

sys.exit(main(["evaluator", *sys.argv[1:]]))
