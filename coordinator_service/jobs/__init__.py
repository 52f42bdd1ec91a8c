"""Background jobs: rows in the database, claimed with leases, committed with the round transition."""
