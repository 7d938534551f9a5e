{{ config(materialized='incremental', incremental_strategy='merge', unique_key=['tenant_id', 'event_id'],
          partition_by=['event_date']) }}

select tenant_id, event_id, customer_id, event_type, event_date, ingested_at
from delta.`{{ var('bronze_events') }}`
{% if is_incremental() %}
where ingested_at > (select max(ingested_at) from {{ this }})
{% endif %}
