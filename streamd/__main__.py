import sys

from streamd.cli.main import main

sys.exit(main())
