"""cbr_devstack: the embedded development stack (private Postgres, NATS and the four services under .run/)."""
