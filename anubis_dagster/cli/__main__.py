"""`python -m anubis_dagster.cli …`: the `anubis` command without its console script."""

from anubis_dagster.cli import main

raise SystemExit(main())
