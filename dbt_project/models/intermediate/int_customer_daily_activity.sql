{{ config(incremental=true, unique_key=['tenant_id', 'customer_id', 'event_date'], partition_by=['event_date']) }}

with events as (
    select * from {{ ref('int_events__unified') }}
    where {{ changed_partitions_filter(
        'select event_date, last_ingested_at from ' ~ ref('int_events__unified') ~ ' where not (' ~ added_tenants_filter() ~ ')',
        ingested_column='last_ingested_at') }}
        or {{ added_tenants_filter() }}
)

select
    tenant_id,
    customer_id,
    event_date,
    industry,
    cast(count(*) as bigint) as events,
    cast(count(*) filter (where event_category = 'signup') as bigint) as signups,
    cast(count(*) filter (where event_category = 'engagement') as bigint) as engagement_events,
    cast(count(*) filter (where event_category = 'core_action') as bigint) as core_actions,
    cast(count(*) filter (where event_category = 'billing') as bigint) as billing_events,
    cast(count(*) filter (where event_category = 'refund') as bigint) as refund_events,
    cast(count(*) filter (where event_category = 'support') as bigint) as support_tickets,
    cast(count(*) filter (where event_category = 'closure') as bigint) as closures,
    cast(coalesce(sum(amount) filter (where is_revenue), 0) as double) as revenue,
    cast(coalesce(sum(abs(amount)) filter (where event_category = 'refund'), 0) as double) as refunds,
    min(event_time) as first_event_at,
    max(event_time) as last_event_at,
    max(last_ingested_at) as last_ingested_at
from events
group by tenant_id, customer_id, event_date, industry
