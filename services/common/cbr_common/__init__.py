"""cbr_common: plumbing shared by the CBR services (settings, gRPC server, errors, auth, db, events). No domain logic."""
