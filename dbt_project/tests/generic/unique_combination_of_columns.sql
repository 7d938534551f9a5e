{#- The grain test: no two rows share the same values of `combination_of_columns`.
    Incremental scope (macros/test_scope.sql): when the model's latest commit rewrote only some
    partitions, a key that contains the partition column is checked within those partitions; a key
    without it (an event id whose date may have changed) is checked for the rewritten rows' keys
    against the WHOLE table, since a merge could duplicate such a key across partitions. The tenants a
    commit replaced whole (analytics on since the last build) are checked with the partitions, or, when the
    key holds tenant_id, within their own rows. -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

{%- set keys = combination_of_columns | join(', ') -%}
{%- set scope = shironzi_test_scope(model) -%}

{%- if scope is none or scope['nothing'] %}
select {{ keys }}, count(*) as duplicates
from {{ model }}
{%- if scope is not none %}
where false  {#- a passed build tested the model's latest commit #}
{%- endif %}
group by {{ keys }}
having count(*) > 1
{%- elif scope['column'] in combination_of_columns %}
select {{ keys }}, count(*) as duplicates
from {{ model }}
where {{ shironzi_scope_filter(scope) }}
group by {{ keys }}
having count(*) > 1
{%- else %}
{#- The rewritten partitions' keys are checked against the whole table. A key holding tenant_id needs no more
    than the replaced tenants' own rows for those tenants: no row of another tenant can share it. -#}
{%- set tenant_keyed = 'tenant_id' in combination_of_columns and scope['tenants'] -%}
{%- set partitions = {'column': scope['column'], 'values': scope['values'],
                      'tenants': '' if tenant_keyed else scope['tenants'], 'nothing': false} -%}
{%- set checks = [] -%}
{%- if partitions['values'] or partitions['tenants'] -%}
  {%- set across -%}
with changed_keys as (
    select distinct {{ keys }}
    from {{ model }}
    where {{ shironzi_scope_filter(partitions) }}
)

select {% for key in combination_of_columns %}whole.{{ key }}, {% endfor %}count(*) as duplicates
from {{ model }} as whole
inner join changed_keys
    on {% for key in combination_of_columns %}whole.{{ key }} = changed_keys.{{ key }}{% if not loop.last %} and {% endif %}{% endfor %}
group by {% for key in combination_of_columns %}whole.{{ key }}{% if not loop.last %}, {% endif %}{% endfor %}
having count(*) > 1
  {%- endset -%}
  {%- do checks.append(across) -%}
{%- endif -%}
{%- if tenant_keyed -%}
  {%- set within -%}
select {{ keys }}, count(*) as duplicates
from {{ model }}
where {{ shironzi_scope_filter({'column': scope['column'], 'values': '', 'tenants': scope['tenants'], 'nothing': false}) }}
group by {{ keys }}
having count(*) > 1
  {%- endset -%}
  {%- do checks.append(within) -%}
{%- endif %}
{%- if checks | length == 2 %}
select * from ({{ checks[0] }}) as across_partitions
union all
select * from ({{ checks[1] }}) as within_tenants
{%- elif checks %}
{{ checks[0] }}
{%- else %}
select {{ keys }}, count(*) as duplicates from {{ model }} where false group by {{ keys }}
{%- endif %}
{%- endif %}

{% endtest %}
