"""DVC stage `compare`: a thin CLI over `genbench compare` (see genbench.cli.STAGES and `genbench compare --help`).

Runs through genbench.engine, on the engine's warm workers."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's genbench: the code DVC tracks
from genbench.engine import run_stage  # noqa: E402

sys.exit(run_stage("compare", sys.argv[1:]))
