"""``python -m audit_ledger.cli``."""

import sys

from audit_ledger.cli import main

sys.exit(main())
