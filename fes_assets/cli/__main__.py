"""`python -m fes_assets.cli`: the `fes` command."""

import sys

from .commands import main

sys.exit(main())
