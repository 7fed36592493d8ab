"""flowzoo's benchmarks: each module runs one comparison, prints its table and writes it to ``benchmarks/results/``.

Run a benchmark as a module from the repository root (the folder holding ``benchmarks/``)::

    python -m benchmarks.<name> --help
    python -m benchmarks.<name> --quick      # a smoke run, where the benchmark has one; writes <name>.quick.json

e.g. ``python -m benchmarks.core_vs_peers --quick``. The modules import each other as ``benchmarks.<module>``
(``benchmarks.few_step_data``, ``benchmarks.digits_features``, ...); :mod:`benchmarks.results` writes the tables
(JSON and CSV with the machine and date, the schema in its docstring). ``benchmarks/README.md`` lists them.
"""
