"""Generation core: image I/O, windowing, generation pipelines and metrics.

Imports neither ``studies`` nor ``reviewer_app``; heavy libraries (torch, diffusers)
are imported lazily inside the modules that need them.
"""
