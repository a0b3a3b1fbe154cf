"""`python -m decrappify` (and `torchrun -m decrappify`) run the CLI."""

import sys

from decrappify.cli import main

sys.exit(main())
