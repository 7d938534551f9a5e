{{ config(incremental=true, incremental_write='overwrite',
          unique_key=['tenant_id', 'cohort_month', 'months_since_signup']) }}

{#- A customer's cohort (dim_customers.cohort_month) is the month of its first signup, else of its first
    event; a cell (tenant, cohort, k) counts the cohort's customers active in month cohort + k.

    Incremental: a cell can only change when (a) its activity month received changed activity, or
    (b) its cohort's membership changed (a new customer, or a late or first signup moving a customer
    between cohorts). (b) is detected per (tenant, cohort) by the size and an order-independent
    checksum of the member ids (members_checksum), compared with the previous build. Only those cells
    are recomputed: from all activity of the changed months, and from the whole history of the
    changed cohorts' members. Every other cell is kept; the small table is overwritten in one commit.
    A full refresh computes every cell and yields the same rows. -#}
{%- set incremental = is_incremental() and incremental_columns_present(['members_checksum', 'last_ingested_at']) %}
{%- set months = [] %}
{%- if execute and incremental %}
  {%- set watermark_sql -%}
    select cast(coalesce(max(last_ingested_at), {{ timestamp_tz_literal('1970-01-01 00:00:00+00') }}) as {{ dbt.type_string() }})
    from {{ this }}
  {%- endset %}
  {%- set watermark = run_query(watermark_sql).columns[0].values()[0] %}
  {%- set months_sql -%}
    select distinct cast(cast({{ dbt.date_trunc('month', 'event_date') }} as date) as {{ dbt.type_string() }})
    from {{ ref('int_customer_daily_activity') }}
    where last_ingested_at > {{ timestamp_tz_literal(watermark) }} and not ({{ added_tenants_filter() }})
    order by 1
  {%- endset %}
  {%- set months = run_query(months_sql).columns[0].values() %}
{%- endif %}
{%- set month_literals = [] %}
{%- for month in months %}{% do month_literals.append("date '" ~ month ~ "'") %}{% endfor %}

with customers as (
    select tenant_id, customer_id, cohort_month
    from {{ ref('dim_customers') }}
),

cohort_stats as (
    select
        tenant_id,
        cohort_month,
        cast(count(*) as bigint) as cohort_size,
        bit_xor({{ member_hash('customer_id') }}) as members_checksum
    from customers
    group by tenant_id, cohort_month
),

activity_bounds as (
    select max(last_ingested_at) as last_ingested_at
    from {{ ref('int_customer_daily_activity') }}
    {%- if incremental %}
    where last_ingested_at > {{ timestamp_tz_literal(watermark) }}
    {%- endif %}
),

{%- if incremental %}

previous as (
    select * from {{ this }}
),

changed_cohorts as (
    select
        coalesce(current_cohorts.tenant_id, previous_cohorts.tenant_id) as tenant_id,
        coalesce(current_cohorts.cohort_month, previous_cohorts.cohort_month) as cohort_month
    from cohort_stats as current_cohorts
    full outer join (
        select distinct tenant_id, cohort_month, cohort_size, members_checksum from previous
    ) as previous_cohorts
        on current_cohorts.tenant_id = previous_cohorts.tenant_id
        and current_cohorts.cohort_month = previous_cohorts.cohort_month
    where current_cohorts.cohort_size is distinct from previous_cohorts.cohort_size
        or current_cohorts.members_checksum is distinct from previous_cohorts.members_checksum
),

active_months as (
    {%- if month_literals %}
    -- every customer active in a changed month (all cohorts' cells of that month)
    select tenant_id, customer_id, cast({{ dbt.date_trunc('month', 'event_date') }} as date) as activity_month
    from {{ ref('int_customer_daily_activity') }}
    where event_date >= {{ month_literals[0] }} and event_date < {{ add_months(month_literals[-1], 1) }}
        and cast({{ dbt.date_trunc('month', 'event_date') }} as date) in ({{ month_literals | join(', ') }})
    union
    {%- endif %}
    -- the whole history of the changed cohorts' members (every cell of those cohorts)
    -- the using() columns unqualified: Sail does not resolve them by the left table's name
    select distinct tenant_id, customer_id,
        cast({{ dbt.date_trunc('month', 'activity.event_date') }} as date) as activity_month
    from {{ ref('int_customer_daily_activity') }} as activity
    {{ semi_join() }} (
        select tenant_id, customer_id
        from customers
        {{ semi_join() }} changed_cohorts using (tenant_id, cohort_month)
    ) as members using (tenant_id, customer_id)
),
{%- else %}

active_months as (
    select distinct tenant_id, customer_id, cast({{ dbt.date_trunc('month', 'event_date') }} as date) as activity_month
    from {{ ref('int_customer_daily_activity') }}
),
{%- endif %}

recomputed as (
    select
        customers.tenant_id,
        customers.cohort_month,
        cast({{ dbt.datediff('customers.cohort_month', 'active_months.activity_month', 'month') }} as bigint)
            as months_since_signup,
        cast(count(*) as bigint) as retained_customers
    from active_months
    inner join customers
        on active_months.tenant_id = customers.tenant_id
        and active_months.customer_id = customers.customer_id
        and active_months.activity_month >= customers.cohort_month
    group by 1, 2, 3
),

cells as (
    {%- if incremental %}
    select tenant_id, cohort_month, months_since_signup, retained_customers
    from previous
    {{ anti_join() }} changed_cohorts using (tenant_id, cohort_month)
    {%- if month_literals %}
    where {{ add_months('cohort_month', 'months_since_signup') }}
        not in ({{ month_literals | join(', ') }})
    {%- endif %}
    union all
    {%- endif %}
    select * from recomputed
)

select
    cells.tenant_id,
    cells.cohort_month,
    cells.months_since_signup,
    cohort_stats.cohort_size,
    cells.retained_customers,
    cast(cells.retained_customers as double) / cohort_stats.cohort_size as retention_rate,
    cohort_stats.members_checksum,
    {%- if incremental %}
    coalesce(activity_bounds.last_ingested_at, (select max(last_ingested_at) from previous)) as last_ingested_at
    {%- else %}
    activity_bounds.last_ingested_at
    {%- endif %}
from cells
inner join cohort_stats
    on cells.tenant_id = cohort_stats.tenant_id
    and cells.cohort_month = cohort_stats.cohort_month
cross join activity_bounds
