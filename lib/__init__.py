"""The science behind the pipeline: each stage in `stages/` is a thin script over these modules.

`lib` never reads `params.yaml`; stages pass every value explicitly.
"""
