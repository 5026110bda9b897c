"""`python -m worker` is the same as the `execworker` console script."""

import sys

from worker.cli.entry import main

sys.exit(main())
