-- depends_on: {{ ref('event_types') }}
with source as (
    select * from {{ source('bronze', 'events') }}
    where event_type in ({{ industry_event_types('healthcare') }})
),

renamed as (
    select
        cast(tenant_id as varchar) as tenant_id,
        cast(event_id as varchar) as event_id,
        cast(customer_id as varchar) as customer_id,
        cast(event_type as varchar) as event_type,
        'healthcare' as industry,
        cast(event_time as timestamptz) as event_time,
        cast(event_date as date) as event_date,
        cast(source as varchar) as source_system,
        cast(ingested_at as timestamptz) as ingested_at,
        cast(amount as double) as amount,
        upper(cast(currency as varchar)) as currency,
        {{ json_property('appointment_id') }} as appointment_id,
        {{ json_property('provider_id') }} as provider_id,
        cast(properties as varchar) as properties
    from source
)

select * from renamed
