"""`python -m graph.cli`: the `ragserve` command line."""

import sys

from graph.cli.main import main

sys.exit(main())
