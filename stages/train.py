"""DVC stage `train`: a thin CLI over genbench.pipeline.run_train (see `genbench train --help`)."""

import sys

from genbench.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
