"""``python -m betlake.cli``: the command line."""

import sys

from betlake.cli import main

sys.exit(main())
