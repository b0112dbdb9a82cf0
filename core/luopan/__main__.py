"""``python -m luopan``: the same command line as ``luopan``."""

from luopan.cli import main

raise SystemExit(main())
