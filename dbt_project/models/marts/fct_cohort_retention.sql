{{ config(unique_key=['tenant_id', 'cohort_month', 'months_since_signup']) }}

with activity as (
    select * from {{ ref('int_customer_daily_activity') }}
),

customer_cohorts as (
    select
        tenant_id,
        customer_id,
        cast(date_trunc('month', coalesce(min(event_date) filter (where signups > 0), min(event_date))) as date)
            as cohort_month
    from activity
    group by tenant_id, customer_id
),

active_months as (
    select distinct
        tenant_id,
        customer_id,
        cast(date_trunc('month', event_date) as date) as activity_month
    from activity
),

cohort_sizes as (
    select tenant_id, cohort_month, cast(count(*) as bigint) as cohort_size
    from customer_cohorts
    group by tenant_id, cohort_month
),

retained as (
    select
        customer_cohorts.tenant_id,
        customer_cohorts.cohort_month,
        cast(date_diff('month', customer_cohorts.cohort_month, active_months.activity_month) as bigint)
            as months_since_signup,
        cast(count(distinct customer_cohorts.customer_id) as bigint) as retained_customers
    from customer_cohorts
    inner join active_months
        on customer_cohorts.tenant_id = active_months.tenant_id
        and customer_cohorts.customer_id = active_months.customer_id
        and active_months.activity_month >= customer_cohorts.cohort_month
    group by 1, 2, 3
)

select
    retained.tenant_id,
    retained.cohort_month,
    retained.months_since_signup,
    cohort_sizes.cohort_size,
    retained.retained_customers,
    cast(retained.retained_customers as double) / cohort_sizes.cohort_size as retention_rate
from retained
inner join cohort_sizes
    on retained.tenant_id = cohort_sizes.tenant_id
    and retained.cohort_month = cohort_sizes.cohort_month
