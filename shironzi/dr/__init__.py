"""Disaster recovery: regions as failure domains (Delta log-shipping replication, residency, epoch-fenced
failover and failback), the registry's PostgreSQL hot standby, and champion models replicated to a peer region.

    from shironzi.dr.replicate import replicate_region, region_lag
    from shironzi.dr.failover import failover, failback
    from shironzi.dr.registry_standby import replication_status, promote
    from shironzi.dr.mlflow_replica import replicate_champions
"""
