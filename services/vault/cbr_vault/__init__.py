"""cbr_vault: the vault service (vaults, their resources, policies, bind rules, tags)."""
