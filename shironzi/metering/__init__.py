"""Usage metering and the cost model: per tenant and day, events landed, bytes stored per layer, API requests
by route group and pipeline compute seconds, in `_platform/usage` (`collect_usage`), priced per plan
(`tenant_costs`).

The inputs are recorded where they happen, cheaply: API requests are counted in process and flushed
(`api_requests`), pipeline stages are logged by a stage observer (`stage_log`); `collect_usage` reads them
together with the Delta logs' file statistics, one grouped pass over all tenants.
"""
