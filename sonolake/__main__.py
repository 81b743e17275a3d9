import sys

from sonolake.cli import main

sys.exit(main())
