"""`python -m vaekit` (and `torchrun -m vaekit`) run the command line."""

import os
import sys

from vaekit.cli import main

code = main()
if os.environ.get("WORLD_SIZE", "1") != "1":
    # Under torchrun, leave without the interpreter's shutdown: by now every file is written and
    # the process group is destroyed, but gloo's C++ threads can still abort the finalization
    # ("terminate called without an active exception"), which would fail a job that succeeded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
