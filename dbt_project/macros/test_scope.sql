{#- Incremental test scope. On an incremental build a Delta model's merge rewrites only some
    partitions; every other row is byte-for-byte what the previous build wrote and tested. So data
    tests on a model check the partitions its LATEST Delta commit wrote, which the shironzi_delta
    plugin records in main.shironzi_delta_scope (overwrite = the whole table; an empty increment
    commits nothing and keeps the previous scope, so a failed run's partitions are checked again).
    A full build or --full-refresh overwrites, so every test then checks the whole table; the var
    `full_tests: true` forces whole-table tests on any build. The scope table lives in the DuckDB file: on
    another target every test checks whole tables. See dbt_project/README.md. -#}

{#- (column, [literal values]) the model's latest commit rewrote, or none for "the whole table". -#}
{% macro shironzi_test_scope(relation) %}
  {%- if not execute or target.type != 'duckdb' or var('full_tests', false) in [true, 'true', 'True', 1, '1'] -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set rendered = relation.render() if relation is not string else relation -%}
  {%- set query -%}
    select scope_column, scope_values from main.shironzi_delta_scope
    where view_name = '{{ rendered | replace("'", "''") }}' and scope_column is not null
  {%- endset -%}
  {%- set rows = run_query(query).rows -%}
  {%- if rows | length == 0 -%}
    {{ return(none) }}
  {%- endif -%}
  {{ return({'column': rows[0][0], 'values': rows[0][1]}) }}
{% endmacro %}


{#- A SQL filter restricting `column` to the scope's values (a range plus the list, so DuckDB pushes
    the range into the Delta/Arrow scan), minus `lookback_days` when the column is a date. -#}
{% macro shironzi_scope_filter(scope, column=none, lookback_days=0) %}
  {%- set column = column or scope['column'] -%}
  {%- set values = scope['values'].split(', ') -%}
  {%- if lookback_days | int > 0 -%}
    {{ return(column ~ " >= cast(" ~ values[0] ~ " as date) - " ~ (lookback_days | int)) }}
  {%- endif -%}
  {{ return(column ~ " between " ~ values[0] ~ " and " ~ values[-1] ~ " and " ~ column ~ " in (" ~ scope['values'] ~ ")") }}
{% endmacro %}


{#- Project override of dbt's get_where_subquery: besides the test's own `where`, tests on a model
    whose latest commit was a partition merge see only the rewritten partitions. tenant_isolated and
    unique_combination_of_columns scope themselves (they need the unfiltered table too). This macro
    runs in dbt's namespace, where the project's macros are not visible: the scope lookup is inline. -#}
{% macro default__get_where_subquery(relation) -%}
  {%- set where = config.get('where', '') -%}
  {%- set filters = [where] if where else [] -%}
  {%- set self_scoped = ['tenant_isolated', 'unique_combination_of_columns'] -%}
  {%- if execute and target.type == 'duckdb' and var('full_tests', false) not in [true, 'true', 'True', 1, '1']
        and model.test_metadata is defined and model.test_metadata.name not in self_scoped -%}
    {%- set query -%}
      select scope_column, scope_values from main.shironzi_delta_scope
      where view_name = '{{ relation.render() | replace("'", "''") }}' and scope_column is not null
    {%- endset -%}
    {%- set rows = run_query(query).rows -%}
    {%- if rows | length > 0 -%}
      {%- set column, listed = rows[0][0], rows[0][1] -%}
      {%- set values = listed.split(', ') -%}
      {%- do filters.append(column ~ " between " ~ values[0] ~ " and " ~ values[-1]
                            ~ " and " ~ column ~ " in (" ~ listed ~ ")") -%}
    {%- endif -%}
  {%- endif -%}
  {%- if filters -%}
    {%- set filtered -%}
      (select * from {{ relation }} where {{ filters | join(' and ') }}) dbt_subquery
    {%- endset -%}
    {{ return(filtered) }}
  {%- endif -%}
  {{ return(relation) }}
{%- endmacro %}
