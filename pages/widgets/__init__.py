"""Streamlit widgets shared by every page: the job panel, the take card, the song form.

This folder sits inside `pages/` but is not a page: Streamlit only turns the `*.py` files
directly in `pages/` into pages.
"""
