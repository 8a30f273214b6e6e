"""`python -m rehearsal`: see rehearsal/cli.py; `python -m rehearsal serve`: see rehearsal/serve.py."""

import sys

from rehearsal.cli import main

if sys.argv[1:2] == ["serve"]:
    from rehearsal.serve import main as serve

    sys.exit(serve(sys.argv[2:]))
sys.exit(main())
