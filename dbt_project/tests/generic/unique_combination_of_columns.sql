{#- The grain test: no two rows share the same values of `combination_of_columns`.
    Incremental scope (macros/test_scope.sql): when the model's latest commit rewrote only some
    partitions, a key that contains the partition column is checked within those partitions; a key
    without it (an event id whose date may have changed) is checked for the rewritten rows' keys
    against the WHOLE table, since a merge could duplicate such a key across partitions. The tenants a
    commit replaced whole (analytics on since the last build) are checked with the partitions. -#}
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
with changed_keys as (
    select distinct {{ keys }}
    from {{ model }}
    where {{ shironzi_scope_filter(scope) }}
)

select {% for key in combination_of_columns %}whole.{{ key }}, {% endfor %}count(*) as duplicates
from {{ model }} as whole
inner join changed_keys
    on {% for key in combination_of_columns %}whole.{{ key }} = changed_keys.{{ key }}{% if not loop.last %} and {% endif %}{% endfor %}
group by {% for key in combination_of_columns %}whole.{{ key }}{% if not loop.last %}, {% endif %}{% endfor %}
having count(*) > 1
{%- endif %}

{% endtest %}
