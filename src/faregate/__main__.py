"""`python -m faregate` is the command line."""

import sys

from faregate.cli import main

sys.exit(main())
