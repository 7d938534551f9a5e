"""Release channels for models: which version serves each tenant (`routing`), and rollouts that move a new
version through the tenants in waves, each judged by a canary analysis (`rollout`; the analysis itself is
`monitoring.canary`)."""
