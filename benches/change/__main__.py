"""`python -m benches.change`: the run, as cli.main() makes it."""

import sys

from benches.change.cli import main

try:
    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after every finally of the run
    sys.exit("benches.change: interrupted; the agent, the sinks and the namespaces are gone")
