"""`python -m participation_grpc` is the `participation-grpc` command."""

from participation_grpc.cli import main

raise SystemExit(main())
