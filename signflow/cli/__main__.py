import sys

from signflow.cli.main import main

sys.exit(main())
