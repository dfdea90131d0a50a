"""`python -m shortlvlm.cli`."""

import sys

from shortlvlm.cli.main import main

sys.exit(main())
