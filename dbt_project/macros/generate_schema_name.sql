{#- DuckDB schemas follow the lake layer (staging, silver, gold), not the target's schema prefix. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {{- (custom_schema_name or target.schema) | trim -}}
{%- endmacro %}
