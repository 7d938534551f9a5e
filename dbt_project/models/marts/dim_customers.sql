{{ config(incremental=true, incremental_write='overwrite', unique_key=['tenant_id', 'customer_id']) }}

{%- set inactivity_days = var('churn_inactivity_days') | int %}

{#- Incremental: status and tenure depend on as_of_date (the data's last day), so every row can change
    and the table is rewritten (one overwrite commit), but only customers with new activity are
    re-aggregated. Activity on days after the previous as_of_date is folded into the previous row
    (min/max/sum/count combine); a customer with a changed day at or before it (a late event) is
    re-aggregated from its whole history. Untouched customers keep their row, re-classified against the
    new as_of_date. Tenants added since the last build are aggregated from their whole history. A full refresh
    aggregates everything and yields the same rows. -#}
{%- set incremental = is_incremental() and incremental_columns_present(['last_ingested_at', 'first_event_date', 'cohort_month']) %}
{%- set late_customers = 0 %}
{%- if execute and incremental %}
  {%- set state_sql -%}
    select cast(coalesce(max(last_ingested_at), {{ timestamp_tz_literal('1970-01-01 00:00:00+00') }}) as {{ dbt.type_string() }}),
           cast(coalesce(max(as_of_date), date '0001-01-01') as {{ dbt.type_string() }})
    from {{ this }}
  {%- endset %}
  {%- set state = run_query(state_sql).rows[0] %}
  {%- set watermark, previous_as_of = state[0], state[1] %}
  {%- set changed_days = changed_partitions_filter(
        'select event_date, last_ingested_at from ' ~ ref('int_customer_daily_activity')
        ~ ' where not (' ~ added_tenants_filter() ~ ')',
        ingested_column='last_ingested_at') %}
  {%- set late_sql -%}
    select count(*) from {{ ref('int_customer_daily_activity') }}
    where (({{ changed_days }} and last_ingested_at > {{ timestamp_tz_literal(watermark) }}) or {{ added_tenants_filter() }})
        and event_date <= date '{{ previous_as_of }}'
  {%- endset %}
  {%- set late_customers = run_query(late_sql).columns[0].values()[0] %}
{%- endif %}

with
{%- if incremental %}
previous as (
    select * from {{ this }}
),

changed_activity as (
    select * from {{ ref('int_customer_daily_activity') }}
    where ({{ changed_days }} and last_ingested_at > {{ timestamp_tz_literal(watermark) }})
        or {{ added_tenants_filter() }}
),

late_customers as (
    select distinct tenant_id, customer_id
    from changed_activity
    where event_date <= date '{{ previous_as_of }}'
),

activity as (
    select * from changed_activity
    {%- if late_customers > 0 %}
    {{ anti_join() }} late_customers using (tenant_id, customer_id)
    union all  -- both sides are int_customer_daily_activity's columns, in its order
    select * from {{ ref('int_customer_daily_activity') }}
    {{ semi_join() }} late_customers using (tenant_id, customer_id)
    {%- endif %}
),

data_bounds as (
    select greatest(date '{{ previous_as_of }}', (select max(event_date) from changed_activity)) as as_of_date
),
{%- else %}
activity as (
    select * from {{ ref('int_customer_daily_activity') }}
),

data_bounds as (
    select max(event_date) as as_of_date from activity
),
{%- endif %}

aggregated as (
    select
        tenant_id,
        customer_id,
        any_value(industry) as industry,
        min(first_event_at) as first_seen_at,
        max(last_event_at) as last_seen_at,
        min(event_date) as first_event_date,
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
        cast(sum(refunds) as double) as lifetime_refunds,
        max(last_ingested_at) as last_ingested_at
    from activity
    group by tenant_id, customer_id
),

{%- if incremental %}

-- previous rows of customers re-aggregated from their whole history (late events, added tenants) are
-- replaced, not combined
previous_kept as (
    select * from previous
    {%- if late_customers > 0 %}
    {{ anti_join() }} late_customers using (tenant_id, customer_id)
    {%- endif %}
    where not ({{ added_tenants_filter() }})
),

customers as (
    select
        coalesce(previous_kept.tenant_id, aggregated.tenant_id) as tenant_id,
        coalesce(previous_kept.customer_id, aggregated.customer_id) as customer_id,
        coalesce(previous_kept.industry, aggregated.industry) as industry,
        {%- for column in ['first_seen_at', 'first_event_date', 'signup_date'] %}
        least(previous_kept.{{ column }}, aggregated.{{ column }}) as {{ column }},
        {%- endfor %}
        {%- for column in ['last_seen_at', 'last_active_date', 'closed_date', 'last_engagement_date',
                           'last_core_action_date', 'last_billing_date', 'last_refund_date',
                           'last_support_ticket_date', 'last_ingested_at'] %}
        greatest(previous_kept.{{ column }}, aggregated.{{ column }}) as {{ column }},
        {%- endfor %}
        {%- for column, kind in [('active_days', 'bigint'), ('lifetime_events', 'bigint'),
                                 ('lifetime_core_actions', 'bigint'), ('lifetime_revenue', 'double'),
                                 ('lifetime_refunds', 'double')] %}
        cast(coalesce(previous_kept.{{ column }}, 0) + coalesce(aggregated.{{ column }}, 0) as {{ kind }})
            as {{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    from previous_kept
    full outer join aggregated
        on previous_kept.tenant_id = aggregated.tenant_id
        and previous_kept.customer_id = aggregated.customer_id
),
{%- else %}

customers as (
    select * from aggregated
),
{%- endif %}

classified as (
    select
        customers.*,
        data_bounds.as_of_date,
        case
            when customers.closed_date is not null
                and customers.closed_date >= coalesce(customers.last_active_date, date '0001-01-01') then 'closed'
            when {{ dbt.datediff('customers.last_active_date', 'data_bounds.as_of_date', 'day') }} >= {{ inactivity_days }}
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
    first_event_date,
    signup_date,
    cast({{ dbt.date_trunc('month', 'coalesce(signup_date, first_event_date)') }} as date) as cohort_month,
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
    cast({{ dbt.datediff(
        'coalesce(signup_date, cast(first_seen_at as date))',
        "case when status = 'closed' then closed_date else as_of_date end",
        'day') }} as bigint) as tenure_days,
    status,
    as_of_date,
    last_ingested_at
from classified
