"""`python -m memstate_pg.cli` = `memstate-pg`."""

import sys

from . import main

sys.exit(main())
