with source as (
    select * from {{ source('platform', 'tenants') }}
),

renamed as (
    select
        cast(tenant_id as varchar) as tenant_id,
        cast(slug as varchar) as tenant_slug,
        lower(cast(industry as varchar)) as industry,
        cast(region as varchar) as region,
        cast(plan as varchar) as plan,
        cast(placement as varchar) as placement,
        cast(status as varchar) as status,
        coalesce(cast(analytics_enabled as boolean), false) as analytics_enabled
    from source
)

select * from renamed
