"""``python -m logfunnel``: the same as the ``logfunnel`` command."""

import sys

from logfunnel.cli import main

sys.exit(main())
