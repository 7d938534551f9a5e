{#-
  The `delta` materialization: build the model into a staged DuckDB table, hand it to the
  shironzi_delta plugin, which writes the Delta table with deltalake and points a view named after
  the model at it. Configs:
    layer            silver | gold (picks the lake root, var <layer>_root)
    partition_by     list of partition columns
    unique_key       list of key columns (needed when incremental)
    incremental      true: after the first build, merge the staged rows on unique_key, scoped to
                     the partitions they touch (models select only the partitions that changed)
    delete_stale_in_scope  true: rows of a touched partition that the rebuild no longer yields are deleted
    added_tenants    (var) tenants added since the last build: a merge writes their rows with one tenant-scoped
                     replace (tenant_id in (...)) instead of rewriting every partition they touch
    incremental_write  merge (default) | overwrite: an incremental model whose every row can change
                     (e.g. dim_customers, classified against the data's last day) computes its rows
                     from {{ this }} plus what changed, and overwrites the table in one commit
-#}
{% macro delta_location(layer, identifier) -%}
  {%- if layer not in ['silver', 'gold'] -%}
    {{ exceptions.raise_compiler_error("delta models need config layer='silver' or 'gold', got " ~ layer) }}
  {%- endif -%}
  {{- var(layer ~ '_root') ~ '/' ~ identifier -}}
{%- endmacro %}


{% materialization delta, adapter='duckdb' %}
  {%- set layer = config.get('layer') -%}
  {%- set location = delta_location(layer, this.identifier) -%}
  {%- set partition_by = config.get('partition_by') or [] -%}
  {%- set partition_by = [partition_by] if partition_by is string else partition_by -%}
  {%- set unique_key = config.get('unique_key') or [] -%}
  {%- set unique_key = [unique_key] if unique_key is string else unique_key -%}
  {%- set mode = 'merge' if is_incremental() and config.get('incremental_write', 'merge') == 'merge' else 'overwrite' -%}

  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set staged_relation = make_intermediate_relation(this.incorporate(type='table'), suffix='__delta_staged') -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {{ drop_relation_if_exists(load_cached_relation(staged_relation)) }}
  {% call statement('main') -%}
    {{ create_table_as(False, staged_relation, sql) }}
  {%- endcall %}
  {%- if existing_relation is not none and existing_relation.type != 'view' -%}
    {{ drop_relation_if_exists(existing_relation) }}
  {%- endif -%}
  {#- the plugin reads the staged table from its own cursor: it must be committed -#}
  {{ adapter.commit() }}

  {% do adapter.store_relation('shironzi_delta', staged_relation, [], location, 'delta', {
       'mode': mode,
       'partition_by': partition_by,
       'unique_key': unique_key,
       'view': target_relation.render(),
       'delete_stale_in_scope': config.get('delete_stale_in_scope', false),
       'added_tenants': var('added_tenants', []) if mode == 'merge' else [],
     }) %}

  {% call statement('drop_staged') -%}
    drop table if exists {{ staged_relation }}
  {%- endcall %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {% do persist_docs(target_relation, model) %}
  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
