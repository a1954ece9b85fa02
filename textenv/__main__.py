import sys

from textenv.cli import main

sys.exit(main())
