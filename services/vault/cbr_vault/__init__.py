"""cbr_vault: the vault service (vaults, their resources, policies, bind rules, tags)."""
MIGRATION_SCHEMA = "vault"
