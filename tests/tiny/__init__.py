"""Tiny random-weight models, built offline in the exact on-disk format of the real ones.

The Studio loads them through the same code paths as the real checkpoints, with a local
folder in place of a hub id. `python -m tests.tiny DIR` builds all of them into DIR.
"""
