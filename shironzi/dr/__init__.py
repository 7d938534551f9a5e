"""Disaster recovery: the registry's hot standby and the replication of champion models to a peer region."""
