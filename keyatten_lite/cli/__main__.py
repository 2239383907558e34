import sys

from keyatten_lite.cli.main import main

sys.exit(main())
