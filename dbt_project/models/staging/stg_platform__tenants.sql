with source as (
    select * from {{ source('platform', 'tenants') }}
),

renamed as (
    select
        cast(tenant_id as {{ dbt.type_string() }}) as tenant_id,
        cast(slug as {{ dbt.type_string() }}) as tenant_slug,
        lower(cast(industry as {{ dbt.type_string() }})) as industry,
        cast(region as {{ dbt.type_string() }}) as region,
        cast(plan as {{ dbt.type_string() }}) as plan,
        cast(placement as {{ dbt.type_string() }}) as placement,
        cast(status as {{ dbt.type_string() }}) as status,
        coalesce(cast(analytics_enabled as boolean), false) as analytics_enabled
    from source
)

select * from renamed
