{{ config(incremental=true, unique_key=['tenant_id', 'event_date'], partition_by=['event_date']) }}

with activity as (
    select * from {{ ref('int_customer_daily_activity') }}
    where {{ changed_partitions_filter(
        'select event_date, last_ingested_at from ' ~ ref('int_customer_daily_activity') ~ ' where not (' ~ added_tenants_filter() ~ ')',
        ingested_column='last_ingested_at') }}
        or {{ added_tenants_filter() }}
),

core_actions as (
    select industry, core_action_name
    from {{ ref('event_types') }}
    where core_action_name is not null
),

daily as (
    select
        activity.tenant_id,
        activity.event_date,
        activity.industry,
        cast(count(*) as bigint) as active_customers,
        cast(count(*) filter (where activity.signups > 0) as bigint) as new_customers,
        cast(sum(activity.events) as bigint) as events,
        cast(sum(activity.revenue) as double) as revenue,
        cast(sum(activity.refunds) as double) as refunds,
        cast(sum(activity.core_actions) as bigint) as core_actions,
        cast(sum(activity.support_tickets) as bigint) as support_tickets,
        cast(count(*) filter (where activity.closures > 0) as bigint) as closed_customers,
        max(activity.last_ingested_at) as last_ingested_at
    from activity
    group by activity.tenant_id, activity.event_date, activity.industry
)

select
    daily.tenant_id,
    daily.event_date,
    daily.industry,
    daily.active_customers,
    daily.new_customers,
    daily.events,
    daily.revenue,
    daily.refunds,
    daily.revenue - daily.refunds as net_revenue,
    core_actions.core_action_name,
    daily.core_actions,
    case when core_actions.core_action_name = 'orders' then daily.core_actions end as orders,
    case when core_actions.core_action_name = 'appointments' then daily.core_actions end as appointments,
    case when core_actions.core_action_name = 'lessons' then daily.core_actions end as lessons,
    daily.support_tickets,
    daily.closed_customers,
    daily.last_ingested_at
from daily
inner join core_actions
    on daily.industry = core_actions.industry
