"""``python -m gateway`` is the ``factory-gateway`` command."""

from gateway.cli import main

raise SystemExit(main())
