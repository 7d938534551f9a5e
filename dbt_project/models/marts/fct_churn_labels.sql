{{ config(incremental=true, delete_stale_in_scope=true,
          unique_key=['tenant_id', 'customer_id', 'snapshot_date'], partition_by=['snapshot_date']) }}

{%- set inactivity_days = var('churn_inactivity_days') | int %}
{%- set horizon_days = var('churn_horizon_days') | int %}

{#- Incremental: only snapshots that new data can change are rebuilt. A label looks at most
    `horizon_days` past its snapshot, and a snapshot only becomes eligible (or an inactivity churn
    known) when the data's last day moves past it, so the earliest snapshot to rebuild is the earlier
    of the first changed event day and the day after the newest horizon already labelled, minus the
    horizon and one week of snapshot spacing. The activity read starts `inactivity_days` earlier, which
    covers every look-back a snapshot makes (last activity, closures, inactivity churns). Tenants added since
    the last build get every snapshot. -#}
{%- set snapshot_floor = none %}
{%- if execute and is_incremental() %}
  {%- set floor_sql -%}
    with watermark as (
        select coalesce(max(last_ingested_at), {{ timestamp_tz_literal('1970-01-01 00:00:00+00') }}) as seen,
               max(horizon_end_date) as last_horizon
        from {{ this }}
    )
    select cast(coalesce(least(
        (select min(event_date) from {{ ref('int_customer_daily_activity') }}
         where last_ingested_at > (select seen from watermark) and not ({{ added_tenants_filter() }})),
        (select last_horizon + 1 from watermark)
    ), (select last_horizon + 1 from watermark)) - {{ horizon_days + 7 }} as {{ dbt.type_string() }})
  {%- endset %}
  {%- set snapshot_floor = run_query(floor_sql).columns[0].values()[0] %}
{%- endif %}

with activity as (
    select
        tenant_id,
        customer_id,
        event_date,
        events > closures as was_active,
        closures > 0 as was_closed,
        last_ingested_at
    from {{ ref('int_customer_daily_activity') }}
    {%- if snapshot_floor %}
    where event_date >= date '{{ snapshot_floor }}' - {{ inactivity_days }} or {{ added_tenants_filter() }}
    {%- endif %}
),

data_bounds as (
    select min(event_date) as min_date, max(event_date) as max_date, max(last_ingested_at) as last_ingested_at
    from activity
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

customer_spans as (
    select
        tenant_id,
        customer_id,
        min(activity_date) as first_active_date,
        max(activity_date) as last_active_date
    from active_days
    group by tenant_id, customer_id
),

-- Weekly snapshots (Mondays) from the customer's first active day while it may still be active,
-- and only those whose label horizon ends inside the data.
candidates as (
    select
        customer_spans.tenant_id,
        customer_spans.customer_id,
        {{ date_series(
            dbt.date_trunc('week', 'customer_spans.first_active_date + 6'),
            'least(customer_spans.last_active_date + ' ~ (inactivity_days - 1) ~ ', data_bounds.max_date - '
                ~ horizon_days ~ ')',
            7) }} as snapshot_date
    from customer_spans
    cross join data_bounds
),

-- One time line per customer: activity, closures and churns sort before a snapshot of the same day,
-- so a snapshot sees what happened up to and including its day and only churns strictly after it.
timeline as (
    select tenant_id, customer_id, activity_date as day, 0 as day_order, activity_date as active_day,
           cast(null as date) as closure_day, cast(null as date) as churn_day, cast(null as {{ dbt.type_string() }}) as churn_reason
    from active_days
    union all
    select tenant_id, customer_id, closure_date, 0, null, closure_date, null, null
    from closure_days
    union all
    select tenant_id, customer_id, churn_date, 0, null, null, churn_date, churn_reason
    from first_churns
    union all
    select tenant_id, customer_id, snapshot_date, 1, null, null, null, null
    from candidates
),

scanned as (
    select
        tenant_id,
        customer_id,
        day as snapshot_date,
        day_order,
        max(active_day) over up_to_now as last_active_date,
        max(closure_day) over up_to_now as last_closure_date,
        min(churn_day) over after_now as next_churn_date
    from timeline
    window
        up_to_now as (partition by tenant_id, customer_id order by day, day_order
                      rows between unbounded preceding and current row),
        after_now as (partition by tenant_id, customer_id order by day, day_order
                      rows between 1 following and unbounded following)
),

-- Customers active as of the snapshot: an event within the inactivity window and no closure since. The next
-- churn's reason is that of the customer's first churn on that day (first_churns has one row per day).
labelled as (
    select scanned.*, first_churns.churn_reason as next_churn_reason
    from scanned
    left join first_churns
        on scanned.tenant_id = first_churns.tenant_id
        and scanned.customer_id = first_churns.customer_id
        and scanned.next_churn_date = first_churns.churn_date
    where scanned.day_order = 1
        and {{ dbt.datediff('scanned.last_active_date', 'scanned.snapshot_date', 'day') }} < {{ inactivity_days }}
        and (scanned.last_closure_date is null or scanned.last_closure_date < scanned.last_active_date)
)

select
    tenant_id,
    customer_id,
    snapshot_date,
    cast({{ dbt.datediff('last_active_date', 'snapshot_date', 'day') }} as bigint) as days_since_last_activity,
    coalesce(next_churn_date <= snapshot_date + {{ horizon_days }}, false) as churned_within_horizon,
    case when next_churn_date <= snapshot_date + {{ horizon_days }} then next_churn_date end as churn_date,
    case when next_churn_date <= snapshot_date + {{ horizon_days }} then next_churn_reason end as churn_reason,
    cast(snapshot_date + {{ horizon_days }} as date) as horizon_end_date,
    -- a scalar subquery, not a cross join: Sail 0.7's merge left a cross-joined column NULL on matched rows
    (select last_ingested_at from data_bounds) as last_ingested_at
from labelled
{%- if snapshot_floor %}
where labelled.snapshot_date >= date '{{ snapshot_floor }}' or {{ added_tenants_filter('labelled.tenant_id') }}
{%- endif %}
