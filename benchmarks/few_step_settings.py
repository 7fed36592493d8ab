"""The configuration of each flow-map method in ``benchmarks/few_step.py``: :mod:`flowzoo.core.fewstep.presets`.

The presets moved into the library so that users get the measured settings without copying a benchmark; this
module keeps the benchmark scripts' imports working. The evidence for each setting is in the preset's docstring.
"""

from __future__ import annotations

from flowzoo.core.fewstep import (MEANFLOW_OT_LR_FACTOR, imf_settings, meanflow_ot_settings,
                                           meanflow_settings, splitmeanflow_settings)

__all__ = ["meanflow_settings", "imf_settings", "meanflow_ot_settings", "MEANFLOW_OT_LR_FACTOR",
           "splitmeanflow_settings"]
