{#-
  The `delta` materialization on the spark target (dbt-spark over Spark Connect): the model's Delta table at the
  same location as on DuckDB (delta_location), written by the engine itself.
    full build, full refresh, non-incremental, incremental_write=overwrite:
        create or replace table ... using delta partitioned by ... location ... as <sql>  (one overwrite commit;
        a model that reads {{ this }} reads the snapshot before it, as Delta guarantees)
    incremental merge: merge into the table on unique_key (the staged rows replace the rows with their key, the
        others are kept: what the DuckDB plugin's partition merge does, since models stage whole partitions);
        with delete_stale_in_scope, rows of the partitions the increment touches that it no longer yields go too
        (and of the tenants added since the last build, whose rows the increment holds all of).
  transformations/dbt_targets.py registers the table in the session catalog before the run (Sail forgets it), and
  fails the build when an incremental model was rebuilt in full instead of merged.
-#}
{% materialization delta, adapter='spark' %}
  {%- set location = delta_location(config.get('layer'), this.identifier) -%}
  {%- set partition_by = config.get('partition_by') or [] -%}
  {%- set partition_by = [partition_by] if partition_by is string else partition_by -%}
  {%- set unique_key = config.get('unique_key') or [] -%}
  {%- set unique_key = [unique_key] if unique_key is string else unique_key -%}
  {%- set merge = is_incremental() and config.get('incremental_write', 'merge') == 'merge' -%}
  {%- set target_relation = this.incorporate(type='table') -%}
  {%- if merge and not unique_key -%}
    {{ exceptions.raise_compiler_error("incremental delta model " ~ this ~ " needs a unique_key to merge on") }}
  {%- endif -%}

  {{ run_hooks(pre_hooks) }}
  {%- if merge -%}
    {#- the increment's columns by name, from its query (dbt-spark's relation cache may know no columns on Sail) -#}
    {%- set columns = get_columns_in_query(sql) -%}
    {%- set source = '(' ~ sql ~ ')' -%}
    {%- set stale = [] -%}
    {%- if config.get('delete_stale_in_scope', false) -%}
      {#- rows of the partitions the increment rewrites that it no longer yields are deleted, as on DuckDB -#}
      {%- if partition_by | length != 1 -%}
        {{ exceptions.raise_compiler_error("delete_stale_in_scope needs exactly one partition_by column: " ~ this) }}
      {%- endif -%}
      {#- the rows of tenants added since the last build are all of theirs: they widen no other tenant's scope -#}
      {%- set touched = run_query('select distinct cast(' ~ partition_by[0] ~ ' as string) from ' ~ source
                                  ~ ' as increment where not (' ~ added_tenants_filter('increment.tenant_id') ~ ')') -%}
      {%- for value in touched.columns[0].values() -%}
        {%- do stale.append("'" ~ value ~ "'") -%}
      {%- endfor -%}
    {%- endif -%}
    {% call statement('main') -%}
      merge into {{ target_relation }} as existing
      using {{ source }} as staged
      on {% for key in unique_key %}existing.{{ key }} = staged.{{ key }}{% if not loop.last %} and {% endif %}{% endfor %}
      when matched then update set
        {%- for column in columns %} existing.{{ column }} = staged.{{ column }}{{ ',' if not loop.last }}{% endfor %}
      when not matched then insert ({{ columns | join(', ') }})
        values ({% for column in columns %}staged.{{ column }}{{ ', ' if not loop.last }}{% endfor %})
      {%- set added = added_tenants_filter('existing.tenant_id') if config.get('delete_stale_in_scope', false) else 'false' -%}
      {%- if stale or added != 'false' %}
      when not matched by source
        and ({% if stale %}cast(existing.{{ partition_by[0] }} as string) in ({{ stale | join(', ') }}){% else %}false{% endif %}
             or {{ added }})
        then delete
      {%- endif %}
    {%- endcall %}
  {%- else -%}
    {% call statement('main') -%}
      create or replace table {{ target_relation }}
      using delta
      {%- if partition_by %} partitioned by ({{ partition_by | join(', ') }}){% endif %}
      location '{{ location }}'
      as {{ sql }}
    {%- endcall %}
  {%- endif -%}
  {{ run_hooks(post_hooks) }}
  {% do persist_docs(target_relation, model) %}
  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
