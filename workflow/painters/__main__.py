import sys

from painters.cli import main

sys.exit(main())
