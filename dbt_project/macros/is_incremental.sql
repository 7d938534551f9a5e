{#- Overrides dbt's is_incremental() so it also answers for `delta` models configured with
    incremental=true: true when the model's Delta-backed relation exists and this is no full refresh. -#}
{% macro is_incremental() %}
  {%- if not execute -%}
    {{ return(false) }}
  {%- endif -%}
  {%- set relation = adapter.get_relation(this.database, this.schema, this.table) -%}
  {%- if model.config.materialized == 'delta' -%}
    {#- on DuckDB a view over the Delta table, on Spark the catalog table itself -#}
    {{ return(relation is not none and relation.type == ('view' if target.type == 'duckdb' else 'table')
              and config.get('incremental', false) and not should_full_refresh()) }}
  {%- endif -%}
  {{ return(relation is not none and relation.type == 'table'
            and model.config.materialized == 'incremental' and not should_full_refresh()) }}
{% endmacro %}


{#- For models that compute incrementally from {{ this }} and overwrite it (incremental_write: overwrite):
    false when the existing table lacks a column the incremental SQL reads (a table written before the
    column existed), so the model computes everything once and the overwrite brings the new schema. -#}
{% macro incremental_columns_present(columns) %}
  {%- if not execute -%}
    {{ return(false) }}
  {%- endif -%}
  {%- set existing = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
  {%- for column in columns -%}
    {%- if column | lower not in existing -%}
      {{ log(this ~ " lacks column " ~ column ~ ": computing it in full", info=true) }}
      {{ return(false) }}
    {%- endif -%}
  {%- endfor -%}
  {{ return(true) }}
{% endmacro %}
