"""DVC stage `sample`: a thin CLI over genbench.pipeline.run_sample (see `genbench sample --help`)."""

import sys

from genbench.cli import main

sys.exit(main(["sample", *sys.argv[1:]]))
