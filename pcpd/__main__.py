import sys

from pcpd.cli import main

sys.exit(main())
