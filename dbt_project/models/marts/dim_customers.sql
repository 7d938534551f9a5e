{{ config(unique_key=['tenant_id', 'customer_id']) }}

{%- set inactivity_days = var('churn_inactivity_days') | int %}

with activity as (
    select * from {{ ref('int_customer_daily_activity') }}
),

data_bounds as (
    select max(event_date) as as_of_date from activity
),

customers as (
    select
        tenant_id,
        customer_id,
        any_value(industry) as industry,
        min(first_event_at) as first_seen_at,
        max(last_event_at) as last_seen_at,
        min(event_date) filter (where signups > 0) as signup_date,
        max(event_date) filter (where events > closures) as last_active_date,
        max(event_date) filter (where closures > 0) as closed_date,
        max(event_date) filter (where engagement_events > 0) as last_engagement_date,
        max(event_date) filter (where core_actions > 0) as last_core_action_date,
        max(event_date) filter (where billing_events > 0) as last_billing_date,
        max(event_date) filter (where refund_events > 0) as last_refund_date,
        max(event_date) filter (where support_tickets > 0) as last_support_ticket_date,
        cast(count(*) as bigint) as active_days,
        cast(sum(events) as bigint) as lifetime_events,
        cast(sum(core_actions) as bigint) as lifetime_core_actions,
        cast(sum(revenue) as double) as lifetime_revenue,
        cast(sum(refunds) as double) as lifetime_refunds
    from activity
    group by tenant_id, customer_id
),

classified as (
    select
        customers.*,
        data_bounds.as_of_date,
        case
            when customers.closed_date is not null
                and customers.closed_date >= coalesce(customers.last_active_date, date '0001-01-01') then 'closed'
            when date_diff('day', customers.last_active_date, data_bounds.as_of_date) >= {{ inactivity_days }}
                then 'inactive'
            else 'active'
        end as status
    from customers
    cross join data_bounds
)

select
    tenant_id,
    customer_id,
    industry,
    first_seen_at,
    last_seen_at,
    signup_date,
    last_active_date,
    closed_date,
    last_engagement_date,
    last_core_action_date,
    last_billing_date,
    last_refund_date,
    last_support_ticket_date,
    active_days,
    lifetime_events,
    lifetime_core_actions,
    lifetime_revenue,
    lifetime_refunds,
    lifetime_revenue - lifetime_refunds as lifetime_value,
    cast(date_diff(
        'day',
        coalesce(signup_date, cast(first_seen_at as date)),
        case when status = 'closed' then closed_date else as_of_date end
    ) as bigint) as tenure_days,
    status,
    as_of_date
from classified
