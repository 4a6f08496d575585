"""The analyses' shared kit: what a stage is (:mod:`~analyses.kit.stage`), how its tables are written
(:mod:`~analyses.kit.tables`), how stages are found and ordered (:mod:`~analyses.kit.registry`) and run
(:mod:`~analyses.kit.runner`), the feature catalog every statistics stage reads
(:mod:`~analyses.kit.features`) and number formatting for reports (:mod:`~analyses.kit.presentation`).

Every other module or package of ``analyses/`` except :mod:`analyses.stats` (the statistics core:
arrays and frames in, numbers out) is a stage, and no stage imports another.
"""
