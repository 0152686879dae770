"""``python -m cipherfact``: the ``cipherfact`` command."""

import sys

from cipherfact.cli import main

sys.exit(main())
