"""Package discovery: each top-level folder below is the source of ``flowzoo.<folder>`` with all its subpackages.

pyproject.toml holds the metadata; setuptools' declarative discovery cannot prefix found packages with a namespace
(``core/paths`` must install as ``flowzoo.core.paths``), so the list is computed here instead of written out.
"""

from setuptools import find_packages, setup

DOMAINS = ["core", "vision", "three_d", "robotics", "biology", "driving"]

setup(
    package_dir={f"flowzoo.{domain}": domain for domain in DOMAINS},
    # "flowzoo" itself is the folder flowzoo/, which holds only __main__.py (`python -m flowzoo`) and no
    # __init__.py: it stays a namespace package, in the wheel and in the editable install alike.
    packages=["flowzoo"] + [f"flowzoo.{domain}{'.' + sub if sub else ''}"
                            for domain in DOMAINS for sub in ["", *find_packages(domain)]],
)
