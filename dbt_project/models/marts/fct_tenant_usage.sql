{{ config(incremental=true, unique_key=['tenant_id', 'usage_date'], partition_by=['usage_date']) }}

{#- Metering per tenant and event day: bronze rows ingested (duplicates included), their logical
    payload bytes, and the deduplicated events that reached silver. -#}
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
)

select
    ingested.tenant_id,
    ingested.event_date as usage_date,
    ingested.rows_ingested,
    ingested.payload_bytes,
    coalesce(curated.events, 0) as events,
    coalesce(curated.active_customers, 0) as active_customers,
    ingested.last_ingested_at
from ingested
left join curated
    on ingested.tenant_id = curated.tenant_id
    and ingested.event_date = curated.event_date
