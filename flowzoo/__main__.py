"""``python -m flowzoo``: the same as the ``flowzoo`` console script.

This folder holds only this file and no ``__init__.py``, so ``flowzoo`` stays a namespace package
made of the mapped folders (setup.py installs the file as ``flowzoo/__main__.py``).
"""

from flowzoo.core.cli import main

raise SystemExit(main())
