"""Test support: the private Postgres/NATS stack and in-process services the integration tests share."""
