{#- Proves a model that joins keeps every row inside one tenant. Two checks against one parent:

    1. containment: every output row's (tenant_id, keys...) exists in the parent under the SAME
       tenant_id; a row whose keys only exist under another tenant means the join crossed tenants;
    2. conservation (when `measure` is given): per tenant, the aggregate `measure` over the output
       equals the aggregate `parent_measure` over the parent (e.g. "sum(events)" and "count(*)"), so no tenant's rows were duplicated into or moved to
       another tenant (customer ids collide across tenants, so a join missing tenant_id inflates this).

    Apply it once per joined parent. `parent_filter` restricts the parent (e.g. analytics_enabled).
    Returns the offending rows; zero rows passes.

    Incremental scope (macros/test_scope.sql): when the model's latest commit rewrote only some
    partitions, only those output rows are checked, and the parent is restricted the same way through
    `parent_scope_column` (the parent column holding the same values, e.g. event_date for usage_date):
    exactly the same values when `parent_scope_lookback_days` is 0 (totals stay comparable), else from
    the first value minus that many days (containment only: an output row's parent rows may be older).
    Without `parent_scope_column`, only a test without `measure` scopes its output (against the whole
    parent); one with a measure then checks the whole output against the whole parent. A model whose
    latest commit a passed build has tested is not checked again. -#}
{% test tenant_isolated(model, parent, keys=[], measure=none, parent_measure=none, parent_filter=none,
                        column_name='tenant_id', parent_scope_column=none, parent_scope_lookback_days=0) %}

{%- set scope = shironzi_test_scope(model) -%}
{%- if scope is not none and scope['nothing'] -%}
  {%- set nothing = true -%}  {#- a passed build tested the model's latest commit: nothing to check -#}
{%- else -%}
  {%- set nothing = false -%}
  {%- if scope is not none and measure and not parent_scope_column -%}
    {%- set scope = none -%}
  {%- endif -%}
{%- endif -%}
{%- if scope is not none and measure and parent_scope_lookback_days | int > 0 -%}
  {%- set scope = none -%}  {#- totals are only comparable over the same partitions -#}
{%- endif -%}
{%- set parent_filters = [parent_filter] if parent_filter else [] -%}
{%- if nothing -%}
  {%- do parent_filters.append('false') -%}
{%- elif scope is not none and parent_scope_column -%}
  {%- do parent_filters.append(shironzi_scope_filter(scope, parent_scope_column, parent_scope_lookback_days)) -%}
{%- endif %}

with output_rows as (
    select * from {{ model }}
    {% if nothing %}where false{% elif scope is not none %}where {{ shironzi_scope_filter(scope) }}{% endif %}
),

parent_rows as (
    select * from {{ parent }}
    {% if parent_filters %}where {{ parent_filters | join(' and ') }}{% endif %}
),

crossed_rows as (
    select
        output_rows.{{ column_name }} as tenant_id,
        'row keys not found under its own tenant in {{ parent }}' as failure
    from output_rows
    where not exists (
        select 1
        from parent_rows
        where parent_rows.{{ column_name }} = output_rows.{{ column_name }}
        {%- for key in keys %}
            and parent_rows.{{ key }} is not distinct from output_rows.{{ key }}
        {%- endfor %}
    )
)

{% if measure %}
, output_totals as (
    select {{ column_name }} as tenant_id, {{ measure }} as total
    from output_rows
    group by 1
),

parent_totals as (
    select {{ column_name }} as tenant_id, {{ parent_measure or measure }} as total
    from parent_rows
    where {{ column_name }} in (select tenant_id from output_totals)
    group by 1
),

moved_totals as (
    select
        coalesce(output_totals.tenant_id, parent_totals.tenant_id) as tenant_id,
        'per-tenant total of {{ measure }} differs from {{ parent }}' as failure
    from output_totals
    full outer join parent_totals on output_totals.tenant_id = parent_totals.tenant_id
    where abs(coalesce(output_totals.total, 0) - coalesce(parent_totals.total, 0)) > 1e-6
)

select * from crossed_rows
union all
select * from moved_totals
{% else %}
select * from crossed_rows
{% endif %}

{% endtest %}
