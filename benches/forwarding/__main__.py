"""`python -m benches.forwarding`: the run, as cli.main() makes it."""

import sys

from benches.forwarding.cli import main

sys.exit(main())
