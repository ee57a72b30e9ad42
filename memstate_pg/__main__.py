"""`python -m memstate_pg` = `memstate-pg`."""

import sys

from .cli import main

sys.exit(main())
