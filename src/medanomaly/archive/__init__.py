"""Score a whole archive: one Parquet row per study, written in parts as results come, resumable.

The scoring itself is :func:`medanomaly.pipeline.score_paths` (the path ``medanomaly score`` uses); this package adds
the list of studies (:mod:`.source`), the rows (:mod:`.rows`), the Parquet store (:mod:`.store`) and two engines:
one process (:mod:`.local`) or a Ray cluster (:mod:`.ray_engine`, the optional ``scale`` extra).
"""
