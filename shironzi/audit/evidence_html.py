"""The evidence pack's readable report: one self-contained HTML file (inline CSS, no scripts, no external
assets), so it can be attached to an audit request or opened offline as it is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>SOC 2 evidence pack {{ m.period.from[:10] }} to {{ m.period.to[:10] }}</title>
<style>
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2933}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{border-bottom:2px solid #e4e7eb;padding-bottom:.3rem;margin-top:2.2rem}
.meta{color:#616e7c} table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.6rem 0}
th,td{border:1px solid #e4e7eb;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f5f7fa} .ok{color:#0b7a3e;font-weight:600} .bad{color:#b42318;font-weight:600}
.tiles{display:flex;flex-wrap:wrap;gap:.6rem;margin:1rem 0} .tile{border:1px solid #e4e7eb;border-radius:6px;
padding:.5rem .8rem;min-width:9rem} .tile b{display:block;font-size:1.3rem} tr.flag td{background:#fff4e5}
code{font-size:.8rem;white-space:pre-wrap;word-break:break-all} .muted{color:#9aa5b1}
table.events{table-layout:fixed} table.events td{overflow-wrap:anywhere} table.events td:first-child{white-space:nowrap}
table.events th:first-child{width:9.5rem} table.events th:last-child{width:36%}
</style></head><body>
<h1>SOC 2 evidence pack</h1>
<p class="meta">Period {{ m.period.from }} to {{ m.period.to }} &middot; generated {{ m.generated_at }}
by <code>{{ m.generated_by }}</code></p>
<div class="tiles">
 <div class="tile"><b>{{ s["keys"] }}</b>API keys</div>
 <div class="tile"><b class="{{ 'bad' if s.stale_keys else 'ok' }}">{{ s.stale_keys }}</b>stale keys</div>
 <div class="tile"><b>{{ s.admin_actions }}</b>admin actions</div>
 <div class="tile"><b>{{ s.changes }}</b>changes</div>
 <div class="tile"><b class="{{ 'ok' if s.audit_chain_ok else 'bad' }}">{{ 'intact' if s.audit_chain_ok
  else 'BROKEN' }}</b>audit chain</div>
 <div class="tile"><b>{{ s.erasures }}</b>erasures</div>
 <div class="tile"><b>{{ s.retention_runs }}</b>retention runs</div>
</div>

<h2>CC6 &middot; Access review</h2>
<p>Keys unused for {{ d.access_review.stale_after_days }} days and older than that are flagged.</p>
<table><tr><th>key</th><th>tenant</th><th>scopes</th><th>created by</th><th>created</th><th>last used</th>
<th>status</th><th>review</th></tr>
{% for k in d.access_review["keys"] %}<tr class="{{ 'flag' if k.stale }}"><td><code>{{ k.prefix }}</code>
{{ k.label or '' }}</td><td>{{ k.tenant_id }}</td><td>{{ k.scopes | join(', ') }}</td><td>{{ k.created_by }}</td>
<td>{{ k.created_at[:10] }}</td><td>{{ (k.last_used or 'never')[:19] }}</td><td>{{ k.status }}</td>
<td>{{ 'STALE: revoke or justify' if k.stale else '' }}</td></tr>
{% endfor %}</table>

<h2>CC6 &middot; Admin actions ({{ d.admin_actions | length }})</h2>
{{ events(d.admin_actions[-200:]) }}
{% if d.admin_actions | length > 200 %}<p class="muted">The newest 200; all are in admin_actions.json.</p>{% endif %}

<h2>CC8 &middot; Changes</h2>
<h3>Model promotions and rollbacks</h3>{{ events(d.changes.models) }}
<h3>Module toggles</h3>{{ events(d.changes.modules) }}
<h3>Plan changes</h3>{{ events(d.changes.plans) }}
<h3>Deployed now</h3>
<table><tr><th>contracts (industry: versions)</th><td>{% for i, v in d.changes.deployed.contracts.items() %}
{{ i }}: {{ v | join(', ') }}{{ '; ' if not loop.last }}{% endfor %}</td></tr>
<tr><th>DAGs</th><td>{% for f in d.changes.deployed.dags %}<code>{{ f.file }}</code> {{ f.sha256 }}<br>
{% endfor %}</td></tr>
<tr><th>dbt models</th><td>{{ d.changes.deployed.dbt_models | length }} models
({% for f in d.changes.deployed.dbt_models %}{{ f.file.rsplit('/', 1)[-1] }} {{ f.sha256[:8] }}{{ ', ' if not loop.last
}}{% endfor %})</td></tr></table>

<h2>Audit log integrity</h2>
<p class="{{ 'ok' if d.audit_chain.ok else 'bad' }}">{{ 'Every day chain verifies' if d.audit_chain.ok
 else 'Verification FAILED' }}: {{ d.audit_chain.events }} events over {{ d.audit_chain.days }} days.</p>
<table>{% for k, v in d.audit_chain.items() if k not in ('ok', 'events', 'days') %}<tr><th>{{ k }}</th>
<td><code>{{ v }}</code></td></tr>{% endfor %}</table>

<h2>Erasures and receipts ({{ d.erasures | length }})</h2>
<table><tr><th>request</th><th>kind</th><th>tenant</th><th>when</th><th>by</th><th>tables</th><th>rows deleted</th>
<th>verified</th><th>signature</th></tr>
{% for e in d.erasures %}<tr><td><code>{{ e.request_id }}</code></td><td>{{ e.kind }}</td><td>{{ e.tenant_id }}</td>
<td>{{ e.created_at[:19] }}</td><td>{{ e.requested_by }}</td><td>{{ e.tables }}</td><td>{{ e.rows_deleted }}</td>
<td class="{{ 'ok' if e.verified else 'bad' }}">{{ 'yes' if e.verified else 'no' }}</td>
<td class="{{ 'ok' if e.signature_valid else 'bad' }}">{{ 'valid' if e.signature_valid else 'INVALID' }}</td></tr>
{% else %}<tr><td colspan="9" class="muted">none in the period</td></tr>{% endfor %}</table>

<h2>Retention runs ({{ d.retention_runs | length }})</h2>{{ events(d.retention_runs) }}

<h2>Backup and restore drill</h2>
{% if d.backup_drills.latest %}<p>Latest: {{ d.backup_drills.latest.event_time }} &middot;
{{ d.backup_drills.latest.action }} &middot; {{ d.backup_drills.latest.outcome }}</p>
{% else %}<p class="muted">{{ d.backup_drills.note }}.</p>{% endif %}

<h2>Encryption of tables holding PII or PHI ({{ d.encryption | length }})</h2>
<table><tr><th>table</th><th>holds</th><th>protection</th><th>customer ids</th><th>at rest</th></tr>
{% for t in d.encryption %}<tr><td><code>{{ t.table }}</code></td><td>{{ t.holds }}</td><td>{{ t.protection }}</td>
<td>{{ t.customer_id }}</td><td>{{ t.at_rest }}</td></tr>
{% else %}<tr><td colspan="5" class="muted">no table holds subject-level rows yet</td></tr>{% endfor %}</table>

<h2>Files of this pack</h2>
<table>{% for f, h in m.files.items() %}<tr><td><code>{{ f }}</code></td><td><code>{{ h }}</code></td></tr>
{% endfor %}</table>
</body></html>
"""

_EVENTS = """<table class="events"><tr><th>when</th><th>actor</th><th>tenant</th><th>action</th><th>resource</th>
<th>outcome</th>
<th>details</th></tr>{% for e in rows %}<tr><td>{{ e.event_time[:19] | replace('T', ' ') }}</td><td>{{ e.actor }}</td>
<td>{{ e.tenant_id or '' }}</td><td>{{ e.action }}</td><td>{{ e.resource }}</td><td>{{ e.outcome }}</td>
<td><code>{{ e.details | tojson | truncate(140) }}</code></td></tr>
{% else %}<tr><td colspan="7" class="muted">none in the period</td></tr>{% endfor %}</table>"""


def render_report(manifest: Mapping[str, Any], sections: Mapping[str, Any]) -> str:
    """The report for a pack's manifest and its (JSON-ready) sections."""
    from jinja2 import Environment
    from markupsafe import Markup

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    events = env.from_string(_EVENTS)
    page = env.from_string(_TEMPLATE)
    return page.render(m=manifest, s=manifest["summary"], d=sections,
                       events=lambda rows: Markup(events.render(rows=rows)))
