"""Outgoing webhooks: one delivery machinery for tenant notifications and platform alerts.

- `signing`: the `Shironzi-Signature: t=<unix time>,v1=<hex HMAC-SHA256>` header (Stripe's scheme) under a
  per-tenant secret derived from the platform key and a generation that rotation bumps;
- `delivery`: a durable queue in the lake (`_platform/webhooks/deliveries`, one row per attempt), retries with
  exponential backoff for `SHIRONZI_WEBHOOK_RETRY_WINDOW_SECONDS`, then `_platform/webhooks/dead_letters`;
- `notify`: the events a tenant subscribes to through its `notifications` module settings.
"""
