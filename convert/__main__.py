"""python -m convert artifacts/NAME  (see convert/cli.py, or --help)."""

import sys

from convert.cli import main

sys.exit(main())
