{{ config(unique_key=['tenant_id', 'customer_id', 'snapshot_date'], partition_by=['snapshot_date']) }}

{%- set inactivity_days = var('churn_inactivity_days') | int %}
{%- set horizon_days = var('churn_horizon_days') | int %}

with activity as (
    select
        tenant_id,
        customer_id,
        event_date,
        events > closures as was_active,
        closures > 0 as was_closed
    from {{ ref('int_customer_daily_activity') }}
),

data_bounds as (
    select min(event_date) as min_date, max(event_date) as max_date from activity
),

active_days as (
    select
        tenant_id,
        customer_id,
        event_date as activity_date,
        lead(event_date) over (partition by tenant_id, customer_id order by event_date) as next_activity_date
    from activity
    where was_active
),

closure_days as (
    select tenant_id, customer_id, event_date as closure_date
    from activity
    where was_closed
),

-- A churn happens when the customer closes its account, or on the day it has gone
-- `inactivity_days` without an event after an active day. An inactivity churn is only
-- known once that whole window lies inside the data.
churn_events as (
    select tenant_id, customer_id, closure_date as churn_date, 'closed' as churn_reason
    from closure_days
    union all
    select
        active_days.tenant_id,
        active_days.customer_id,
        cast(active_days.activity_date + {{ inactivity_days }} as date) as churn_date,
        'inactive' as churn_reason
    from active_days
    cross join data_bounds
    where (active_days.next_activity_date is null
           or active_days.next_activity_date > active_days.activity_date + {{ inactivity_days }})
        and active_days.activity_date + {{ inactivity_days }} <= data_bounds.max_date
),

first_churns as (
    select tenant_id, customer_id, churn_date, min(churn_reason) as churn_reason
    from churn_events
    group by tenant_id, customer_id, churn_date
),

-- Weekly snapshots (Mondays) whose label horizon ends inside the data.
snapshots as (
    select cast(snapshot_day as date) as snapshot_date
    from data_bounds,
        generate_series(
            cast(date_trunc('week', min_date + 6) as date),
            cast(max_date - {{ horizon_days }} as date),
            interval 7 day
        ) as series(snapshot_day)
),

customer_spans as (
    select
        tenant_id,
        customer_id,
        min(activity_date) as first_active_date,
        max(activity_date) as last_active_date
    from active_days
    group by tenant_id, customer_id
),

candidates as (
    select customer_spans.tenant_id, customer_spans.customer_id, snapshots.snapshot_date
    from customer_spans
    inner join snapshots
        on snapshots.snapshot_date >= customer_spans.first_active_date
        and snapshots.snapshot_date < customer_spans.last_active_date + {{ inactivity_days }}
),

with_last_activity as (
    select candidates.*, active_days.activity_date as last_active_date
    from candidates
    asof inner join active_days
        on candidates.tenant_id = active_days.tenant_id
        and candidates.customer_id = active_days.customer_id
        and candidates.snapshot_date >= active_days.activity_date
),

with_last_closure as (
    select with_last_activity.*, closure_days.closure_date as last_closure_date
    from with_last_activity
    asof left join closure_days
        on with_last_activity.tenant_id = closure_days.tenant_id
        and with_last_activity.customer_id = closure_days.customer_id
        and with_last_activity.snapshot_date >= closure_days.closure_date
),

-- Customers active as of the snapshot: an event within the inactivity window and no closure since.
active_at_snapshot as (
    select *
    from with_last_closure
    where date_diff('day', last_active_date, snapshot_date) < {{ inactivity_days }}
        and (last_closure_date is null or last_closure_date < last_active_date)
),

labelled as (
    select
        active_at_snapshot.tenant_id,
        active_at_snapshot.customer_id,
        active_at_snapshot.snapshot_date,
        active_at_snapshot.last_active_date,
        first_churns.churn_date as next_churn_date,
        first_churns.churn_reason as next_churn_reason
    from active_at_snapshot
    asof left join first_churns
        on active_at_snapshot.tenant_id = first_churns.tenant_id
        and active_at_snapshot.customer_id = first_churns.customer_id
        and active_at_snapshot.snapshot_date < first_churns.churn_date
)

select
    tenant_id,
    customer_id,
    snapshot_date,
    cast(date_diff('day', last_active_date, snapshot_date) as bigint) as days_since_last_activity,
    coalesce(next_churn_date <= snapshot_date + {{ horizon_days }}, false) as churned_within_horizon,
    case when next_churn_date <= snapshot_date + {{ horizon_days }} then next_churn_date end as churn_date,
    case when next_churn_date <= snapshot_date + {{ horizon_days }} then next_churn_reason end as churn_reason,
    cast(snapshot_date + {{ horizon_days }} as date) as horizon_end_date
from labelled
