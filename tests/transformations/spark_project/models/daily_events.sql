{{ config(materialized='table') }}

select tenant_id, event_date, cast(count(*) as bigint) as events
from delta.`{{ var('bronze_events') }}`
group by tenant_id, event_date
