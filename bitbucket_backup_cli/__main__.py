"""`python -m bitbucket_backup_cli`."""

import sys

from bitbucket_backup_cli.main import main

sys.exit(main())
