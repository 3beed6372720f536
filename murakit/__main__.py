import sys

from murakit.cli import main

sys.exit(main())
