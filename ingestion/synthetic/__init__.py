"""Synthetic multi-tenant activity with a latent churn process, for demos, tests and benchmarks.

sim = simulate([("t1", "ecommerce"), ("t2", "education")], customers=6_000, days=365, seed=7,
               bad_share=0.01)
write_landing_files(sim, landing_dir, fmt="jsonl")          # batch path
produce_to(producer, "events", sim)                          # stream path (any produce/flush object)
write_ground_truth(sim)                                      # {SHIRONZI_HOME}/ground_truth, never the lake
"""

from ingestion.synthetic.emit import (
    APPLICABLE_KINDS,
    EXPECTED_REASON,
    LandingManifest,
    PayloadBatch,
    Producer,
    default_ground_truth_dir,
    iter_payload_batches,
    produce_to,
    wire_frame,
    write_ground_truth,
    write_landing_files,
)
from ingestion.synthetic.simulate import (
    BAD_KINDS,
    HORIZON_DAYS,
    SimTenant,
    Simulation,
    as_sim_tenants,
    churn_logit,
    simulate,
    tenant_sizes,
)

__all__ = [
    "APPLICABLE_KINDS",
    "BAD_KINDS",
    "EXPECTED_REASON",
    "HORIZON_DAYS",
    "LandingManifest",
    "PayloadBatch",
    "Producer",
    "SimTenant",
    "Simulation",
    "as_sim_tenants",
    "churn_logit",
    "default_ground_truth_dir",
    "iter_payload_batches",
    "produce_to",
    "simulate",
    "tenant_sizes",
    "wire_frame",
    "write_ground_truth",
    "write_landing_files",
]
