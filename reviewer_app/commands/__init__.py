"""Subcommands of ``synthdx``; see ``reviewer_app.cli``."""
