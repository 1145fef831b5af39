"""`python -m recsys_cli ...` runs the `recsys` command."""

from recsys_cli.main import main

raise SystemExit(main())
