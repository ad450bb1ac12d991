"""Runnable examples (a package so that tests import them as ``examples.<name>``)."""
