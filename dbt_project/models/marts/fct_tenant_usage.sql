{{ config(incremental=true, unique_key=['tenant_id', 'usage_date'], partition_by=['usage_date']) }}

{#- Metering per tenant and event day: bronze rows ingested (duplicates included), their logical
    payload bytes, and the deduplicated events that reached silver; beside them the platform's metering of
    that day (`_platform/usage`: events landed, bytes stored, API requests, compute seconds). -#}
{%- set ingested_rows -%}
    select
        events.tenant_id,
        events.event_date,
        events.ingested_at,
        {{ byte_length('events.event_id') }} + {{ byte_length('events.customer_id') }} + {{ byte_length('events.event_type') }}
            + coalesce({{ byte_length('events.source_system') }}, 0) + coalesce({{ byte_length('events.currency') }}, 0)
            + coalesce({{ byte_length('events.properties') }}, 0) + {{ byte_length('events.tenant_id') }}
            + 8 * 4 as payload_bytes
    from (
        {{ union_all_by_name([ref('stg_events__ecommerce'), ref('stg_events__healthcare'), ref('stg_events__education')]) }}
    ) as events
    inner join {{ ref('stg_platform__tenants') }} as tenants
        on events.tenant_id = tenants.tenant_id
        and events.industry = tenants.industry
    where tenants.analytics_enabled
        and tenants.region = '{{ var("region") }}'
{%- endset %}

{%- set scope = '(' ~ changed_partitions_filter(
    'select event_date, ingested_at from ' ~ source('bronze', 'events') ~ ' where not (' ~ added_tenants_filter() ~ ')')
    ~ ') or (' ~ changed_partitions_filter(
    'select day as event_date, collected_at as ingested_at from ' ~ source('platform', 'usage'),
    watermark_column='metered_at')
    ~ ') or ' ~ added_tenants_filter() %}

with ingested as (
    select
        tenant_id,
        event_date,
        cast(count(*) as bigint) as rows_ingested,
        cast(sum(payload_bytes) as bigint) as payload_bytes,
        max(ingested_at) as last_ingested_at
    from ({{ ingested_rows }}) as ingested_rows
    where {{ scope }}
    group by tenant_id, event_date
),

curated as (
    select
        tenant_id,
        event_date,
        cast(count(*) as bigint) as events,
        cast(count(distinct customer_id) as bigint) as active_customers
    from {{ ref('int_events__unified') }}
    where {{ scope }}
    group by tenant_id, event_date
),

metered as (
    select
        metering.tenant_id,
        metering.usage_date as event_date,
        metering.events_landed,
        metering.bytes_stored,
        metering.api_requests,
        metering.compute_seconds,
        metering.metered_at
    from {{ ref('stg_platform__usage') }} as metering
    inner join {{ ref('stg_platform__tenants') }} as tenants
        on metering.tenant_id = tenants.tenant_id
    where tenants.analytics_enabled
        and tenants.region = '{{ var("region") }}'
),

scoped_metered as (
    select * from metered
    where {{ scope }}
),

days as (
    select tenant_id, event_date from ingested
    union
    select tenant_id, event_date from scoped_metered
)

select
    days.tenant_id,
    days.event_date as usage_date,
    coalesce(ingested.rows_ingested, 0) as rows_ingested,
    coalesce(ingested.payload_bytes, 0) as payload_bytes,
    coalesce(curated.events, 0) as events,
    coalesce(curated.active_customers, 0) as active_customers,
    ingested.last_ingested_at,
    coalesce(scoped_metered.events_landed, 0) as events_landed,
    coalesce(scoped_metered.bytes_stored, 0) as bytes_stored,
    coalesce(scoped_metered.api_requests, 0) as api_requests,
    coalesce(scoped_metered.compute_seconds, 0) as compute_seconds,
    scoped_metered.metered_at
from days
left join ingested
    on days.tenant_id = ingested.tenant_id
    and days.event_date = ingested.event_date
left join curated
    on days.tenant_id = curated.tenant_id
    and days.event_date = curated.event_date
left join scoped_metered
    on days.tenant_id = scoped_metered.tenant_id
    and days.event_date = scoped_metered.event_date
