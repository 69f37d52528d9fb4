"""The destination side of replication (DESIGN.md 17.2-17.8): RegionTransferService, which alone writes a replica's
chunks, index rows, manifests and backup rows in this region."""
