"""`python -m cbr_cli ...` runs the `cbr` command."""
import sys

from cbr_cli.main import main

sys.exit(main())
