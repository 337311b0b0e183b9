"""hvguest: the Linux guest side of Hyper-V integration services (KVP, VSS, FCOPY).

Importing the package has no side effects; see README.md for the layers.
"""

__version__ = "0.1.0"
