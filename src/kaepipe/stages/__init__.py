"""Stages: every run_* (files in, library calls, files out) and the result paths the workflow uses."""
