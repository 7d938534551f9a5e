{#- The partitions an incremental model must rebuild, as a filter with literal values (so DuckDB
    pushes it down to the Delta/Arrow scan and reads only those partitions).

    upstream_sql: a query over the model's input with `column` and `ingested_column`.
    A partition changed when some upstream row was ingested after the newest ingestion time the
    model has absorbed (`watermark_column` of {{ this }}). A late event for a day months back
    yields exactly that day. Returns 'true' on a full build and 'false' when nothing changed. -#}
{% macro changed_partitions_filter(upstream_sql, column='event_date', ingested_column='ingested_at',
                                   watermark_column='last_ingested_at') %}
  {%- if not execute or not is_incremental() -%}
    {{ return('true') }}
  {%- endif -%}
  {%- set watermark_sql -%}
    select cast(coalesce(max({{ watermark_column }}), {{ timestamp_tz_literal('1970-01-01 00:00:00+00') }}) as {{ dbt.type_string() }})
    from {{ this }}
  {%- endset -%}
  {%- set watermark = run_query(watermark_sql).columns[0].values()[0] -%}
  {%- set dates_sql -%}
    select distinct cast({{ column }} as {{ dbt.type_string() }}) as changed
    from ({{ upstream_sql }}) as upstream
    where {{ ingested_column }} > {{ timestamp_tz_literal(watermark) }}
    order by 1
  {%- endset -%}
  {%- set dates = run_query(dates_sql).columns[0].values() -%}
  {%- if dates | length == 0 -%}
    {{ return('false') }}
  {%- endif -%}
  {%- set literals = [] -%}
  {%- for value in dates -%}
    {%- do literals.append("date '" ~ value ~ "'") -%}
  {%- endfor -%}
  {{ return(column ~ " between " ~ literals[0] ~ " and " ~ literals[-1] ~ " and " ~ column ~ " in (" ~ literals | join(', ') ~ ")") }}
{% endmacro %}


{#- The event types of one industry, from the event_types seed, as a SQL list of literals. -#}
{% macro industry_event_types(industry) %}
  {%- if not execute -%}
    {{ return("''") }}
  {%- endif -%}
  {%- set query -%}
    select event_type from {{ ref('event_types') }} where industry = '{{ industry }}' order by 1
  {%- endset -%}
  {%- set types = run_query(query).columns[0].values() -%}
  {%- set literals = [] -%}
  {%- for value in types -%}
    {%- do literals.append("'" ~ value ~ "'") -%}
  {%- endfor -%}
  {{ return(literals | join(', ') if literals else "''") }}
{% endmacro %}


{#- The tenants whose analytics came on since the last build (the runner's var `added_tenants`, derived from the
    build state it keeps in the lake): an incremental build computes all of their rows, whatever their ingestion
    time, as if it were their first build. Returns `<column> in (...)`, or 'false' (none, or a full build, which
    computes everyone). Incremental models read `(<changed scope>) or <this filter>`. -#}
{% macro added_tenants_filter(column='tenant_id') %}
  {%- set added = var('added_tenants', []) -%}
  {%- if not execute or not is_incremental() or not added -%}
    {{ return('false') }}
  {%- endif -%}
  {%- set literals = [] -%}
  {%- for tenant in added -%}
    {%- do literals.append("'" ~ (tenant | string | replace("'", "''")) ~ "'") -%}
  {%- endfor -%}
  {{ return(column ~ " in (" ~ literals | join(', ') ~ ")") }}
{% endmacro %}
