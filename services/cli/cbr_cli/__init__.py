"""`cbr`: the command-line client of CBR's vault, protectable, backup, task, policy and replication services."""
__version__ = "0.13.0"
