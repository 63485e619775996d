"""`python -m bot` runs the same CLI as the `unlock-bot` console script."""

from bot.cli import main

raise SystemExit(main())
