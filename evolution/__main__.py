import sys

from evolution.cli import main

sys.exit(main())
