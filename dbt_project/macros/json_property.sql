{#- One field of the bronze `properties` JSON as text; NULL when the JSON is malformed or lacks it. -#}
{% macro json_property(field, column='properties') -%}
    case when json_valid({{ column }}) then json_extract_string({{ column }}, '$.{{ field }}') end
{%- endmacro %}
