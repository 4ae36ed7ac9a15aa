"""DVC stage `check`: a thin CLI over `genbench check` (see genbench.cli.STAGES and `genbench check --help`).

Runs through genbench.engine: on the engine's warm workers, or here for a light stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's genbench: the code DVC tracks
from genbench.engine import run_stage  # noqa: E402

sys.exit(run_stage("check", sys.argv[1:]))
