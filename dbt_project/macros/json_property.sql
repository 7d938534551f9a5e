{#- One field of the bronze `properties` JSON as text; NULL when the JSON is malformed or lacks it. -#}
{% macro json_property(field, column='properties') -%}
  {{ return(adapter.dispatch('json_property')(field, column)) }}
{%- endmacro %}

{% macro duckdb__json_property(field, column) -%}
    case when json_valid({{ column }}) then json_extract_string({{ column }}, '$.{{ field }}') end
{%- endmacro %}

{#- Spark's get_json_object is NULL for malformed JSON already. -#}
{% macro spark__json_property(field, column) -%}
    get_json_object({{ column }}, '$.{{ field }}')
{%- endmacro %}
