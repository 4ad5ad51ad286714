import sys

from orthonode.cli import main

sys.exit(main())
