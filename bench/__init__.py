"""KVP benchmark: hvguest against the reference hv_kvp_daemon, both under the simulator.

Run ``python -m bench`` (``--help`` for options). Not a test: it prints a
Markdown report of round trips per second, daemon CPU per operation, peak RSS
and start-up time, with the project's performance targets marked met/missed.
"""
