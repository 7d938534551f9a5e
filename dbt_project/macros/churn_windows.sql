{#- A tenant's churn window from its cadence: the `churn_cadence_percentile` of the gaps between consecutive
    active days of its customers (over all of `activity`), rounded up to whole weeks and clamped to
    [churn_window_min_days, churn_window_max_days]. One row per tenant with repeat activity. -#}
{% macro churn_cadence_windows(activity) -%}
    select
        tenant_id,
        least(greatest(cast(ceil({{ percentile_cont('gap_days', var('churn_cadence_percentile', 0.9)) }} / 7.0)
                            * 7 as int), {{ var('churn_window_min_days', 30) | int }}),
              {{ var('churn_window_max_days', 182) | int }}) as window_days
    from (
        select
            tenant_id,
            {{ dbt.datediff('lag(event_date) over (partition by tenant_id, customer_id order by event_date)',
                            'event_date', 'day') }} as gap_days
        from {{ activity }}
        where events > closures
    ) gaps
    where gap_days is not null
    group by tenant_id
{%- endmacro %}
