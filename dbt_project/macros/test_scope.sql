{#- Incremental test scope. On an incremental build a Delta model's merge rewrites only some
    partitions; every other row is byte-for-byte what the previous build wrote and tested. So data
    tests on a model check the partitions its LATEST Delta commit wrote, and the tenants it replaced
    whole (analytics on since the last build), which the shironzi_delta plugin records in
    main.shironzi_delta_scope (overwrite = the whole table). An empty increment commits nothing and
    keeps the previous scope: it is checked again, unless a build whose every test ran has passed since
    (the runner then marks the scope `tested`), in which case there is nothing to check.
    A full build or --full-refresh overwrites, so every test then checks the whole table; the var
    `full_tests: true` forces whole-table tests on any build. The scope table lives in the DuckDB file: on
    another target every test checks whole tables. See dbt_project/README.md. -#}

{#- What the model's latest commit wrote: {'column', 'values' (literals, ', '-joined), 'tenants' (likewise)},
    with 'nothing' true when a passed build has tested it since; none for "the whole table". -#}
{% macro shironzi_test_scope(relation) %}
  {%- if not execute or target.type != 'duckdb' or var('full_tests', false) in [true, 'true', 'True', 1, '1'] -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set rendered = relation.render() if relation is not string else relation -%}
  {%- set query -%}
    select scope_column, scope_values, scope_tenants, coalesce(tested, false) from main.shironzi_delta_scope
    where view_name = '{{ rendered | replace("'", "''") }}'
  {%- endset -%}
  {%- set rows = run_query(query).rows -%}
  {%- if rows | length == 0 -%}
    {{ return(none) }}
  {%- endif -%}
  {%- if rows[0][3] -%}
    {{ return({'column': none, 'values': '', 'tenants': '', 'nothing': true}) }}
  {%- endif -%}
  {%- if rows[0][0] is none -%}
    {{ return(none) }}
  {%- endif -%}
  {{ return({'column': rows[0][0], 'values': rows[0][1] or '', 'tenants': rows[0][2] or '', 'nothing': false}) }}
{% endmacro %}


{#- A SQL filter restricting `column` to the scope's values (a range plus the list, so DuckDB pushes
    the range into the Delta/Arrow scan), minus `lookback_days` when the column is a date; or the
    scope's tenants; 'false' when there is nothing to check. -#}
{% macro shironzi_scope_filter(scope, column=none, lookback_days=0) %}
  {%- set column = column or scope['column'] -%}
  {%- set parts = [] -%}
  {%- if scope['values'] and not scope.get('nothing') -%}
    {%- set values = scope['values'].split(', ') -%}
    {%- if lookback_days | int > 0 -%}
      {%- do parts.append(column ~ " >= cast(" ~ values[0] ~ " as date) - " ~ (lookback_days | int)) -%}
    {%- else -%}
      {%- do parts.append(column ~ " between " ~ values[0] ~ " and " ~ values[-1] ~ " and " ~ column ~ " in ("
                          ~ scope['values'] ~ ")") -%}
    {%- endif -%}
  {%- endif -%}
  {%- if scope.get('tenants') and not scope.get('nothing') -%}
    {%- do parts.append("tenant_id in (" ~ scope['tenants'] ~ ")") -%}
  {%- endif -%}
  {{ return("(" ~ parts | join(") or (") ~ ")" if parts else "false") }}
{% endmacro %}


{#- Project override of dbt's get_where_subquery: besides the test's own `where`, tests on a model
    whose latest commit was a partition merge see only the rewritten partitions and replaced tenants
    (nothing, once a passed build has tested them). tenant_isolated and
    unique_combination_of_columns scope themselves (they need the unfiltered table too). This macro
    runs in dbt's namespace, where the project's macros are not visible: the scope lookup is inline. -#}
{% macro default__get_where_subquery(relation) -%}
  {%- set where = config.get('where', '') -%}
  {%- set filters = [where] if where else [] -%}
  {%- set self_scoped = ['tenant_isolated', 'unique_combination_of_columns'] -%}
  {%- if execute and target.type == 'duckdb' and var('full_tests', false) not in [true, 'true', 'True', 1, '1']
        and model.test_metadata is defined and model.test_metadata.name not in self_scoped -%}
    {%- set query -%}
      select scope_column, scope_values, scope_tenants, coalesce(tested, false) from main.shironzi_delta_scope
      where view_name = '{{ relation.render() | replace("'", "''") }}' and (scope_column is not null or tested)
    {%- endset -%}
    {%- set rows = run_query(query).rows -%}
    {%- if rows | length > 0 -%}
      {%- set column, listed, tenants, tested = rows[0][0], rows[0][1], rows[0][2], rows[0][3] -%}
      {%- set parts = [] -%}
      {%- if listed and not tested -%}
        {%- set values = listed.split(', ') -%}
        {%- do parts.append(column ~ " between " ~ values[0] ~ " and " ~ values[-1]
                            ~ " and " ~ column ~ " in (" ~ listed ~ ")") -%}
      {%- endif -%}
      {%- if tenants and not tested -%}
        {%- do parts.append("tenant_id in (" ~ tenants ~ ")") -%}
      {%- endif -%}
      {%- do filters.append("(" ~ parts | join(") or (") ~ ")" if parts else "false") -%}
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
