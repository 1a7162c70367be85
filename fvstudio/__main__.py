"""``python -m fvstudio`` is the ``fvstudio`` command."""
import sys

from .cli import main

sys.exit(main())
