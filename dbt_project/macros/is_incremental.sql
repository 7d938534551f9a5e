{#- Overrides dbt's is_incremental() so it also answers for `delta` models configured with
    incremental=true: true when the model's Delta-backed view exists and this is no full refresh. -#}
{% macro is_incremental() %}
  {%- if not execute -%}
    {{ return(false) }}
  {%- endif -%}
  {%- set relation = adapter.get_relation(this.database, this.schema, this.table) -%}
  {%- if model.config.materialized == 'delta' -%}
    {{ return(relation is not none and relation.type == 'view'
              and config.get('incremental', false) and not should_full_refresh()) }}
  {%- endif -%}
  {{ return(relation is not none and relation.type == 'table'
            and model.config.materialized == 'incremental' and not should_full_refresh()) }}
{% endmacro %}
