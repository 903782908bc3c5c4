"""``python -m pcpd``: the ``pcpd`` command."""

import sys

try:
    from pcpd.cli import main
    status = main()
except KeyboardInterrupt:          # ^C before the command line could even load: no traceback
    status = 130
sys.exit(status)
