{{ config(incremental=true, delete_stale_in_scope=true,
          unique_key=['tenant_id', 'customer_id', 'snapshot_date'], partition_by=['snapshot_date']) }}

{%- set inactivity_days = var('churn_inactivity_days') | int %}
{%- set horizon_days = var('churn_horizon_days') | int %}
{#- Per-tenant windows. `churn_windows` (tenant_id -> {inactivity_days, horizon_days}, the tenants'
    churn_prediction settings, filled by the runner) wins; else, with `churn_windows_from_cadence`, both are
    the tenant's `churn_cadence_percentile` of gaps between its customers' active days, rounded up to whole
    weeks and clamped to [churn_window_min_days, churn_window_max_days]; else the two vars above.
    Lapsed customers keep snapshots for `churn_lapsed_lookback_days` after their last activity, the same
    look-back as the feature store's customer spine, so training sees whom scoring sees. -#}
{%- set windows = var('churn_windows', {}) or {} %}
{%- set from_cadence = var('churn_windows_from_cadence', true) %}
{%- set lookback_days = var('churn_lapsed_lookback_days', 365) | int %}
{#- Tenants added alone: when no existing tenant's activity arrived since the last build, its data's last day did
    not move, and the explicitly set windows are those its labels were built with, no existing tenant's label can
    change. Only the added tenants are then computed (none on a build with nothing new), against the data's
    last day over every tenant. -#}
{%- set added_only = none %}
{%- if execute and is_incremental() %}
  {#- one scan per query: several scans of one Arrow-backed relation in one DuckDB query can stall -#}
  {%- set labelled = run_query('select cast(coalesce(max(last_ingested_at), '
      ~ timestamp_tz_literal('1970-01-01 00:00:00+00') ~ ') as ' ~ dbt.type_string() ~ '), count(*) from ' ~ this).rows[0] %}
  {%- set activity_sql -%}
    select
        count(*) filter (where last_ingested_at > {{ timestamp_tz_literal(labelled[0]) }}
                         and not ({{ added_tenants_filter() }})) as arrived,
        cast(max(event_date) as {{ dbt.type_string() }}) as last_day,
        cast(max(event_date) filter (where not ({{ added_tenants_filter() }})) as {{ dbt.type_string() }}) as existing_last_day
    from {{ ref('int_customer_daily_activity') }}
  {%- endset %}
  {%- set activity_state = run_query(activity_sql).rows[0] %}
  {%- set rewindowed = 0 %}
  {%- if windows %}
    {%- set rewindowed_sql -%}
        select count(*) from {{ this }} as labels inner join (
            {%- for tenant_id, window in windows.items() %}
            select '{{ tenant_id }}' as tenant_id, {{ window['inactivity_days'] | int }} as inactivity_days,
                   {{ window['horizon_days'] | int }} as horizon_days
            {%- if not loop.last %} union all{% endif %}
            {%- endfor %}
        ) as set_windows on labels.tenant_id = set_windows.tenant_id
        where labels.inactivity_days <> set_windows.inactivity_days or labels.horizon_days <> set_windows.horizon_days
    {%- endset %}
    {%- set rewindowed = run_query(rewindowed_sql).rows[0][0] %}
  {%- endif %}
  {%- if labelled[1] > 0 and activity_state[0] == 0 and activity_state[1] == activity_state[2] and rewindowed == 0 %}
    {%- set added_only = activity_state[1] %}
  {%- endif %}
{%- endif %}
{%- set longest = [] %}
{%- if added_only is not none %}
{%- elif from_cadence and execute and is_incremental() %}
  {#- the longest cadence window the tenants have now bounds how far back new data can change labels -#}
  {%- set cadence_max = run_query('select max(window_days) from (' ~ churn_cadence_windows(ref('int_customer_daily_activity')) ~ ') w').columns[0].values()[0] %}
  {%- set longest = [cadence_max | int] if cadence_max is not none else [] %}
{%- elif from_cadence %}
  {%- set longest = [var('churn_window_max_days', 182) | int] %}
{%- endif %}
{%- set max_inactivity = ([inactivity_days] + longest + windows.values() | map(attribute='inactivity_days') | map('int') | list) | max %}
{%- set max_horizon = ([horizon_days] + longest + windows.values() | map(attribute='horizon_days') | map('int') | list) | max %}

{#- Incremental: only snapshots that new data can change are rebuilt. A label looks at most
    the longest horizon past its snapshot, and a snapshot only becomes eligible (or an inactivity churn
    known) when the data's last day moves past it, so the earliest snapshot to rebuild is the earlier
    of the first changed event day and the day after the newest horizon already labelled, minus the
    horizon and one week of snapshot spacing. The activity read starts the lapsed look-back (or the
    longest inactivity window) earlier, which covers every look-back a snapshot makes (last activity,
    closures, inactivity churns). Tenants added since the last build get every snapshot. -#}
{%- set snapshot_floor = none %}
{%- if execute and is_incremental() and added_only is none %}
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
    ), (select last_horizon + 1 from watermark)) - {{ max_horizon + 7 }} as {{ dbt.type_string() }})
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
    {%- if added_only is not none %}
    where {{ added_tenants_filter() }}
    {%- elif snapshot_floor %}
    where event_date >= date '{{ snapshot_floor }}' - {{ [lookback_days, max_inactivity] | max }}
          or {{ added_tenants_filter() }}
    {%- endif %}
),

tenant_windows as (
    {%- for tenant_id, window in windows.items() %}
    select '{{ tenant_id }}' as tenant_id, {{ window['inactivity_days'] | int }} as inactivity_days,
           {{ window['horizon_days'] | int }} as horizon_days
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- else %}
    select cast(null as {{ dbt.type_string() }}) as tenant_id, 0 as inactivity_days, 0 as horizon_days
    where 1 = 0
    {%- endfor %}
),

-- The tenant's cadence over ALL its history (not only an incremental build's read).
cadence as (
    {%- if from_cadence %}
    {%- if added_only is not none %}
    {{ churn_cadence_windows('(select * from ' ~ ref('int_customer_daily_activity') ~ ' where ' ~ added_tenants_filter() ~ ') as added_activity') }}
    {%- else %}
    {{ churn_cadence_windows(ref('int_customer_daily_activity')) }}
    {%- endif %}
    {%- else %}
    select cast(null as {{ dbt.type_string() }}) as tenant_id, 0 as window_days
    where 1 = 0
    {%- endif %}
),

data_bounds as (
    select min(event_date) as min_date,
           {% if added_only is not none %}cast('{{ added_only }}' as date){% else %}max(event_date){% endif %} as max_date,
           max(last_ingested_at) as last_ingested_at
    from activity
),

active_days as (
    select
        activity.tenant_id,
        activity.customer_id,
        activity.event_date as activity_date,
        lead(activity.event_date) over (partition by activity.tenant_id, activity.customer_id
                                        order by activity.event_date) as next_activity_date,
        coalesce(tenant_windows.inactivity_days, cadence.window_days, {{ inactivity_days }}) as inactivity_days,
        coalesce(tenant_windows.horizon_days, cadence.window_days, {{ horizon_days }}) as horizon_days
    from activity
    left join tenant_windows on activity.tenant_id = tenant_windows.tenant_id
    left join cadence on activity.tenant_id = cadence.tenant_id
    where activity.was_active
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
        cast(active_days.activity_date + active_days.inactivity_days as date) as churn_date,
        'inactive' as churn_reason
    from active_days
    cross join data_bounds
    where (active_days.next_activity_date is null
           or active_days.next_activity_date > active_days.activity_date + active_days.inactivity_days)
        and active_days.activity_date + active_days.inactivity_days <= data_bounds.max_date
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
        max(activity_date) as last_active_date,
        max(inactivity_days) as inactivity_days,
        max(horizon_days) as horizon_days
    from active_days
    group by tenant_id, customer_id
),

-- Weekly snapshots (Mondays) from the customer's first active day until `lookback_days` after its last
-- one (lapsed customers included), and only those whose label horizon ends inside the data.
candidates as (
    select
        customer_spans.tenant_id,
        customer_spans.customer_id,
        customer_spans.inactivity_days,
        customer_spans.horizon_days,
        {{ date_series(
            dbt.date_trunc('week', 'customer_spans.first_active_date + 6'),
            'least(customer_spans.last_active_date + ' ~ (lookback_days - 1)
                ~ ', data_bounds.max_date - customer_spans.horizon_days)',
            7) }} as snapshot_date
    from customer_spans
    cross join data_bounds
),

-- One time line per customer: activity, closures and churns sort before a snapshot of the same day,
-- so a snapshot sees what happened up to and including its day and only churns strictly after it.
timeline as (
    select tenant_id, customer_id, activity_date as day, 0 as day_order, activity_date as active_day,
           cast(null as date) as closure_day, cast(null as date) as churn_day, cast(null as {{ dbt.type_string() }}) as churn_reason,
           cast(null as int) as inactivity_days, cast(null as int) as horizon_days
    from active_days
    union all
    select tenant_id, customer_id, closure_date, 0, null, closure_date, null, null, null, null
    from closure_days
    union all
    select tenant_id, customer_id, churn_date, 0, null, null, churn_date, churn_reason, null, null
    from first_churns
    union all
    select tenant_id, customer_id, snapshot_date, 1, null, null, null, null, inactivity_days, horizon_days
    from candidates
),

scanned as (
    select
        tenant_id,
        customer_id,
        day as snapshot_date,
        day_order,
        inactivity_days,
        horizon_days,
        max(active_day) over up_to_now as last_active_date,
        max(closure_day) over up_to_now as last_closure_date,
        min(churn_day) over after_now as next_churn_date,
        min(active_day) over after_now as next_active_date
    from timeline
    window
        up_to_now as (partition by tenant_id, customer_id order by day, day_order
                      rows between unbounded preceding and current row),
        after_now as (partition by tenant_id, customer_id order by day, day_order
                      rows between 1 following and unbounded following)
),

-- Customers who have not closed their account since their last activity. ACTIVE ones (an event within the
-- inactivity window) churn on their next churn; LAPSED ones (silent for the whole window: they already churned)
-- are labelled by whether they stay away for the whole horizon. The next churn's reason is that of the
-- customer's first churn on that day (first_churns has one row per day).
labelled as (
    select
        scanned.*,
        first_churns.churn_reason as next_churn_reason,
        {{ dbt.datediff('scanned.last_active_date', 'scanned.snapshot_date', 'day') }}
            >= scanned.inactivity_days as lapsed
    from scanned
    left join first_churns
        on scanned.tenant_id = first_churns.tenant_id
        and scanned.customer_id = first_churns.customer_id
        and scanned.next_churn_date = first_churns.churn_date
    where scanned.day_order = 1
        and (scanned.last_closure_date is null or scanned.last_closure_date < scanned.last_active_date)
),

outcomes as (
    select
        labelled.*,
        case when lapsed then coalesce(next_active_date > snapshot_date + horizon_days, true)
             else coalesce(next_churn_date <= snapshot_date + horizon_days, false) end as churned
    from labelled
)

select
    tenant_id,
    customer_id,
    snapshot_date,
    cast({{ dbt.datediff('last_active_date', 'snapshot_date', 'day') }} as bigint) as days_since_last_activity,
    lapsed,
    churned as churned_within_horizon,
    case when churned and lapsed then cast(snapshot_date + horizon_days as date)
         when churned then next_churn_date end as churn_date,
    case when churned and lapsed then 'lapsed' when churned then next_churn_reason end as churn_reason,
    cast(inactivity_days as bigint) as inactivity_days,
    cast(horizon_days as bigint) as horizon_days,
    cast(snapshot_date + horizon_days as date) as horizon_end_date,
    -- a scalar subquery, not a cross join: Sail 0.7's merge left a cross-joined column NULL on matched rows
    (select last_ingested_at from data_bounds) as last_ingested_at
from outcomes
{%- if snapshot_floor %}
where outcomes.snapshot_date >= date '{{ snapshot_floor }}' or {{ added_tenants_filter('outcomes.tenant_id') }}
{%- endif %}
