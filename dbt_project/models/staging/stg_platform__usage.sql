with source as (
    select * from {{ source('platform', 'usage') }}
),

renamed as (
    select
        cast(tenant_id as {{ dbt.type_string() }}) as tenant_id,
        cast(day as date) as usage_date,
        cast(events_landed as {{ dbt.type_bigint() }}) as events_landed,
        cast(bytes_total as {{ dbt.type_bigint() }}) as bytes_stored,
        cast(api_requests as {{ dbt.type_bigint() }}) as api_requests,
        cast(compute_seconds as double) as compute_seconds,
        cast(collected_at as {{ type_timestamp_tz() }}) as metered_at
    from source
)

select * from renamed
