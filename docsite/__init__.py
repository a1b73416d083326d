"""The documentation site: its generated pages (reference.py) and the MkDocs hook that adds them (hooks.py)."""
