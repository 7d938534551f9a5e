{#-
  The `delta` materialization on the spark target (dbt-spark over Spark Connect): the model's Delta table at the
  same location as on DuckDB (delta_location), written by the engine itself.
    full build, full refresh, non-incremental, incremental_write=overwrite:
        create or replace table ... using delta partitioned by ... location ... as <sql>  (one overwrite commit;
        a model that reads {{ this }} reads the snapshot before it, as Delta guarantees)
    incremental merge: merge into the table on unique_key (the staged rows replace the rows with their key, the
        others are kept: what the DuckDB plugin's partition merge does, since models stage whole partitions).
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
    {% call statement('main') -%}
      merge into {{ target_relation }} as existing
      using ({{ sql }}) as staged
      on {% for key in unique_key %}existing.{{ key }} = staged.{{ key }}{% if not loop.last %} and {% endif %}{% endfor %}
      when matched then update set *
      when not matched then insert *
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
