"""Reading and writing models: where a model comes from, how it is placed on devices, and how a pruned
checkpoint lands on disk and is proven to reload identically.

One job per module: `source` (names and pre-load checks), `load`, `save`, `atomic` (crash-safe file
operations), `verify`, `fingerprint` (identities of configs and weights), `offload` (weights that
accelerate keeps outside their modules) and `placement` (device maps for layer-by-layer loading).
This package imports no algorithm; the algorithms use only `offload` and `placement` from it.
"""
