-- depends_on: {{ ref('event_types') }}
with source as (
    select * from {{ source('bronze', 'events') }}
    where event_type in ({{ industry_event_types('ecommerce') }})
),

renamed as (
    select
        cast(tenant_id as {{ dbt.type_string() }}) as tenant_id,
        cast(event_id as {{ dbt.type_string() }}) as event_id,
        cast(customer_id as {{ dbt.type_string() }}) as customer_id,
        cast(event_type as {{ dbt.type_string() }}) as event_type,
        'ecommerce' as industry,
        cast(event_time as {{ type_timestamp_tz() }}) as event_time,
        cast(event_date as date) as event_date,
        cast(source as {{ dbt.type_string() }}) as source_system,
        cast(ingested_at as {{ type_timestamp_tz() }}) as ingested_at,
        cast(amount as double) as amount,
        upper(cast(currency as {{ dbt.type_string() }})) as currency,
        {{ json_property('order_id') }} as order_id,
        {{ json_property('product_id') }} as product_id,
        {{ json_property('plan') }} as plan_name,
        cast(properties as {{ dbt.type_string() }}) as properties
    from source
)

select * from renamed
