"""Command-line scripts (``python scripts/<name>.py``); a package only so tests can import them."""
