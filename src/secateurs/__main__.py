"""``python -m secateurs`` runs the command line."""

import sys

from secateurs.cli import main

sys.exit(main())
