"""``python -m synthaug.cli``: the same as the ``synthaug`` command."""

import sys

from . import main

sys.exit(main())
