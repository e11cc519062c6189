-- answered_within (0005) as one expression the planner inlines into service_level and into
-- the reader's query. The 0005 version, a query over the list of bounds, is run once per
-- row as a separate function call: a 30-day report of 20 queues at 15 minutes (57,600 rows)
-- spent about 0.9 s in service_level alone, ten times the rest of the report. Same
-- signature, same value for every threshold: the buckets up to the largest bound not above
-- the threshold, or the first bucket when the threshold is below it (or null).
create or replace function answered_within(p_measures jsonb, p_threshold_s integer)
returns bigint
language sql immutable parallel safe as $$
    select coalesce((p_measures ->> 'answered_wait_le_5s')::bigint, 0)
         + case when p_threshold_s >= 10
                then coalesce((p_measures ->> 'answered_wait_le_10s')::bigint, 0) else 0 end
         + case when p_threshold_s >= 15
                then coalesce((p_measures ->> 'answered_wait_le_15s')::bigint, 0) else 0 end
         + case when p_threshold_s >= 20
                then coalesce((p_measures ->> 'answered_wait_le_20s')::bigint, 0) else 0 end
         + case when p_threshold_s >= 30
                then coalesce((p_measures ->> 'answered_wait_le_30s')::bigint, 0) else 0 end
         + case when p_threshold_s >= 45
                then coalesce((p_measures ->> 'answered_wait_le_45s')::bigint, 0) else 0 end
         + case when p_threshold_s >= 60
                then coalesce((p_measures ->> 'answered_wait_le_60s')::bigint, 0) else 0 end
         + case when p_threshold_s >= 90
                then coalesce((p_measures ->> 'answered_wait_le_90s')::bigint, 0) else 0 end
         + case when p_threshold_s >= 120
                then coalesce((p_measures ->> 'answered_wait_le_120s')::bigint, 0) else 0 end
         + case when p_threshold_s >= 180
                then coalesce((p_measures ->> 'answered_wait_le_180s')::bigint, 0) else 0 end
         + case when p_threshold_s >= 300
                then coalesce((p_measures ->> 'answered_wait_le_300s')::bigint, 0) else 0 end
$$;

-- ratio (0005) with each argument used once, so that it is inlined too (a function whose
-- argument appears twice is called row by row instead). null when the denominator is zero
-- or null, as before.
create or replace function ratio(p_numerator numeric, p_denominator numeric) returns numeric
language sql immutable parallel safe as $$
    select p_numerator / nullif(p_denominator, 0)
$$;
