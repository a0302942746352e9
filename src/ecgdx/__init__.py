"""ecgdx: diagnose 12-lead ECG printouts from images.

Importing this package is cheap and never imports torch: heavy modules load inside the
functions and subcommands that need them.
"""

__version__ = "0.1.0"
