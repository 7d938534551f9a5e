"""Regions as failure domains: Delta log-shipping replication, residency, epoch-fenced failover and failback.

    from shironzi.dr.replicate import replicate_region, region_lag
    from shironzi.dr.failover import failover, failback
"""
