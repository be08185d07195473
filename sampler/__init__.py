"""The sampler: follows the ingestor's manifest, writes small same-format samples.

Read in pipeline order: ``cli`` (flags -> ``settings.Settings``) -> ``run`` (the
loop, signals, sd_notify via ``notify``) -> ``tail`` (manifest lines from the
``checkpoint`` on; ``watch`` says when to look) -> ``sample`` (one record ->
sample + sidecar, or an error ``.meta.json``; names and safe file access in
``paths``) -> ``formats`` / ``formats_json`` / ``formats_archive`` (one
sampler per format, bounded by ``limits``).
"""
