"""`cbr`: the command-line client of CBR's vault, protectable, backup and task services."""
