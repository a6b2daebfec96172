"""Blinded reader studies (visual Turing tests): schema, database access, design, statistics.

Depends on sqlmodel, numpy and scipy only: never on ``core``, ``reviewer_app``, torch or gradio.
"""
