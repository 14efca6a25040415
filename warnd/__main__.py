import sys

from warnd.cli import main

sys.exit(main())
