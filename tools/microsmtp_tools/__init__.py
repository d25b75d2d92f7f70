"""Host-side tools for microsmtp: the ``microsmtp`` command and its helpers."""
