"""`python -m hvguest` is `hvguest`."""

from hvguest.daemon.cli import main

raise SystemExit(main())
