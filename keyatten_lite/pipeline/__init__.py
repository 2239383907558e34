"""The pipeline: prepare → read → score → rank, one set of stages per way through it.

``inputs`` checks and cleans documents; ``settings`` is what the extractor was asked for; ``resources``
is what it opens lazily; ``stages`` is the shape all stages share; ``compat``, ``default`` and ``bio``
are the stages; ``cached`` wraps them in the disk cache; ``run`` picks the stages for a call.
"""
