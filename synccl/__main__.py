"""``python -m synccl`` runs the command line."""

import sys

from synccl.cli import main

sys.exit(main())
