"""The ``plateau`` command: run the embedded default, check it, apply migrations."""
