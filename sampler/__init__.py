"""The sampler: follows the ingestor's manifests, writes small same-format samples.

Read in pipeline order: ``cli`` (flags made from the ``settings`` table;
``SAMPLER_*`` environment and the ``[sampler]`` table of the ingestor's
config, whose sources ``config`` reads) -> ``run`` (the loop, signals,
sd_notify, ``metrics``) -> ``streams`` (the manifests dirs to follow, found
by the sources' templates, and where each line's sample goes) -> ``tail``
(manifest lines from the ``checkpoint`` on; ``watch`` says when to look) ->
``sample`` (one record -> sample + sidecar, or an error ``.meta.json``; names
and safe file access in ``paths``) -> ``sniff`` and ``formats`` /
``formats_*`` (one sampler per format, bounded by ``limits``).
"""
