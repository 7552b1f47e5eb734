"""``python -m chatapp_devkit``: the ``chatapp-devkit`` command."""

from chatapp_devkit.cli import main

raise SystemExit(main())
