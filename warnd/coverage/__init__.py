"""Coverage: which areas an alert reached, which it did not (预警发布盲区), and how fast.

Modules, one job each:

``config``    the ``[coverage]`` settings
``models``    the report models (JSON of the API, input of the renderers)
``counters``  the per-alert counters dispatch keeps, read in one round trip
``service``   reports per alert (or chain) rolled up the hierarchy; period statistics
``render``    CSV, standalone HTML and text tables

This package imports only ``config`` eagerly (the settings model needs it).
"""

from warnd.coverage.config import CoverageSettings

__all__ = ["CoverageSettings"]
