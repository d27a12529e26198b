"""``python -m secateurs`` runs the command line."""

import sys

from secateurs.cli.main import main

sys.exit(main())
