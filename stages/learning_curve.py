"""DVC stage `learning_curve`: a thin CLI over `genbench learning_curve` (see genbench.cli.STAGES and `genbench learning_curve --help`).

Runs through genbench.engine: on the engine's warm workers, or here for a light stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's genbench: the code DVC tracks
from genbench.engine import run_stage  # noqa: E402

sys.exit(run_stage("learning_curve", sys.argv[1:]))
