"""`python -m lakehoused` runs the command line."""

from lakehoused.cli import main

raise SystemExit(main())
