"""`python -m board.runner …`: run an agent from a checkout, without Django (see `manage.py run_agent --help`)."""

import sys

from .cli import main

sys.exit(main())
