"""``python -m pem.serve ARTIFACT ...`` runs ``pem-serve``."""
import sys

from pem.serve.cli import main

sys.exit(main())
