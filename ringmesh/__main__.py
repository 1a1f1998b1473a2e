import sys

from ringmesh.api.cli import main

sys.exit(main())
