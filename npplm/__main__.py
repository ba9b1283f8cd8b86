import sys

from npplm.cli import main

sys.exit(main())
