"""``python -m plateau_cli`` is the same as the ``plateau`` command."""

import sys

from plateau_cli.main import main

sys.exit(main())
