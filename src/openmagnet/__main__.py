"""`python -m openmagnet ...` is the same as the `openmagnet` command."""
import sys

from .cli import main

sys.exit(main())
