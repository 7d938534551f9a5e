{#- Types and functions whose spelling differs between the targets (dbt-duckdb, dbt-spark), dispatched on the
    adapter so a model's SQL compiles on both. dbt's own cross-database macros (dbt.type_string(), ...) cover the rest. -#}

{#- A UTC instant: DuckDB's timestamptz; Spark's timestamp is an instant already (session time zone UTC). -#}
{% macro type_timestamp_tz() -%}
  {{ return(adapter.dispatch('type_timestamp_tz')()) }}
{%- endmacro %}

{% macro default__type_timestamp_tz() -%}
  timestamp
{%- endmacro %}

{% macro duckdb__type_timestamp_tz() -%}
  timestamptz
{%- endmacro %}

{#- A UTC instant literal from its text. -#}
{% macro timestamp_tz_literal(text) -%}
  {{ return(adapter.dispatch('timestamp_tz_literal')(text)) }}
{%- endmacro %}

{% macro default__timestamp_tz_literal(text) -%}
  timestamp '{{ text }}'
{%- endmacro %}

{% macro duckdb__timestamp_tz_literal(text) -%}
  timestamptz '{{ text }}'
{%- endmacro %}

{#- A string's length in bytes (UTF-8). -#}
{% macro byte_length(expression) -%}
  {{ return(adapter.dispatch('byte_length')(expression)) }}
{%- endmacro %}

{% macro default__byte_length(expression) -%}
  octet_length({{ expression }})
{%- endmacro %}

{% macro duckdb__byte_length(expression) -%}
  strlen({{ expression }})
{%- endmacro %}

{#- `union all` of relations matched by column name, a column missing from a relation being NULL there (DuckDB's
    `union all by name`). Elsewhere the select lists are spelled out from the relations' columns, in the order
    DuckDB gives them (first appearance). -#}
{% macro union_all_by_name(relations) -%}
  {{ return(adapter.dispatch('union_all_by_name')(relations)) }}
{%- endmacro %}

{% macro duckdb__union_all_by_name(relations) -%}
  {%- for relation in relations %}
    select * from {{ relation }}
    {% if not loop.last %}union all by name{% endif %}
  {%- endfor %}
{%- endmacro %}

{% macro default__union_all_by_name(relations) -%}
  {%- if not execute -%}
    {{ return('select * from ' ~ relations[0]) }}
  {%- endif -%}
  {%- set names, types, present = [], {}, [] -%}
  {%- for relation in relations -%}
    {%- set columns = {} -%}
    {%- for column in adapter.get_columns_in_relation(relation) -%}
      {%- do columns.update({column.name | lower: column.name}) -%}
      {%- if column.name | lower not in types -%}
        {%- do names.append(column.name | lower) -%}
        {%- do types.update({column.name | lower: column.data_type}) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- do present.append(columns) -%}
  {%- endfor -%}
  {%- for relation in relations %}
    {%- set columns = present[loop.index0] %}
    select
    {%- for name in names %}
      {% if name in columns %}{{ columns[name] }}{% else %}cast(null as {{ types[name] }}){% endif %} as {{ name }}{% if not loop.last %},{% endif %}
    {%- endfor %}
    from {{ relation }}
    {% if not loop.last %}union all{% endif %}
  {%- endfor %}
{%- endmacro %}

{#- Join keywords that keep the left rows with (semi) or without (anti) a match on the right. -#}
{% macro semi_join() -%}
  {{ return(adapter.dispatch('semi_join')()) }}
{%- endmacro %}

{% macro default__semi_join() -%}
  left semi join
{%- endmacro %}

{% macro duckdb__semi_join() -%}
  semi join
{%- endmacro %}

{% macro anti_join() -%}
  {{ return(adapter.dispatch('anti_join')()) }}
{%- endmacro %}

{% macro default__anti_join() -%}
  left anti join
{%- endmacro %}

{% macro duckdb__anti_join() -%}
  anti join
{%- endmacro %}

{#- One row per `step_days` from `start` to `stop` (dates), as a select-list expression that fans the row out;
    no rows when start > stop. -#}
{% macro date_series(start, stop, step_days) -%}
  {{ return(adapter.dispatch('date_series')(start, stop, step_days)) }}
{%- endmacro %}

{% macro duckdb__date_series(start, stop, step_days) -%}
  cast(unnest(generate_series(
            cast({{ start }} as timestamp),
            cast({{ stop }} as timestamp),
            interval {{ step_days }} day
        )) as date)
{%- endmacro %}

{#- Spark's sequence() refuses start > stop: the empty case is a NULL array, which explode() drops. -#}
{% macro default__date_series(start, stop, step_days) -%}
  explode(case when cast({{ start }} as date) <= cast({{ stop }} as date)
                then sequence(cast({{ start }} as date), cast({{ stop }} as date), interval {{ step_days }} day) end)
{%- endmacro %}

{#- A 63-bit hash of a member id for the order-independent members_checksum (bit_xor of it). Each engine has its
    own hash, so the checksum is comparable only within one target (it detects changes between builds). -#}
{% macro member_hash(expression) -%}
  {{ return(adapter.dispatch('member_hash')(expression)) }}
{%- endmacro %}

{% macro duckdb__member_hash(expression) -%}
  cast(hash({{ expression }}) >> 1 as bigint)
{%- endmacro %}

{% macro default__member_hash(expression) -%}
  shiftright(xxhash64({{ expression }}), 1)
{%- endmacro %}

{#- A date `months` months later. -#}
{% macro add_months(expression, months) -%}
  {{ return(adapter.dispatch('add_months')(expression, months)) }}
{%- endmacro %}

{% macro duckdb__add_months(expression, months) -%}
  cast({{ expression }} + to_months(cast({{ months }} as integer)) as date)
{%- endmacro %}

{% macro default__add_months(expression, months) -%}
  add_months({{ expression }}, cast({{ months }} as integer))
{%- endmacro %}

{#- The continuous `fraction` percentile of `expression` as an aggregate. -#}
{% macro percentile_cont(expression, fraction) -%}
  {{ return(adapter.dispatch('percentile_cont')(expression, fraction)) }}
{%- endmacro %}

{% macro duckdb__percentile_cont(expression, fraction) -%}
  quantile_cont({{ expression }}, {{ fraction }})
{%- endmacro %}

{% macro default__percentile_cont(expression, fraction) -%}
  percentile({{ expression }}, {{ fraction }})
{%- endmacro %}
