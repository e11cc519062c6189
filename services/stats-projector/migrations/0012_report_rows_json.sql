-- The client's interval report as JSON text made by the database: report_rows() returns
-- one JSON object per row of GET /api/v1/reports/{kind}, in report order, so the access
-- gateway passes them through instead of decoding jsonb and re-encoding each figure.
--
-- Why stored columns: a 30-day report of 20 queues at 15 minutes is 57,600 rows. Turning
-- each row's jsonb into text, reading every measure a metric needs back out of it and
-- dividing numerics took most of the 300 ms of the gateway's former report query, for
-- figures that only change when the row's measures do. Each row of `intervals` and `rollups` therefore keeps
-- its JSON, computed by PostgreSQL whenever its measures are written (generated columns):
--   report_head            {"id":…,"period_start":"…Z","measures":{…},
--                          "metrics":{"service_level":
--   report_service_levels  the service level under each threshold bound (queues only)
--   report_tail            ,"asa_ms":…,"aht_ms":…,"abandonment_rate":…,"occupancy":…,
--                          "compliance_abandonment_rate":…}}
-- and report_rows() adds, per row, the service level and threshold of the queue's current
-- setting between the head and the tail.
--
-- The figures are the metric functions of 0005/0011 themselves, applied to the row's
-- measures (a test compares every served row with those functions applied when it is
-- read). A later migration that redefines one
-- of those functions must recompute these columns (`update intervals set measures =
-- measures`, the same for rollups): PostgreSQL does not recompute a stored column when a
-- function it calls changes.

-- A metric value as JSON: the shortest text that reads back as the same double (what
-- Python's float() of the numeric prints), or null. That is PostgreSQL's float output at
-- extra_float_digits 1, its default, which Plateau's connections also set
-- (plateau_runtime.db): a session at 0 or less would store rounded figures.
create function report_number(p_value numeric) returns text
language sql immutable parallel safe as $$
    select coalesce(p_value::float8::text, 'null')
$$;

-- Immutable although to_json and to_char are only stable: text escapes the same way in
-- every session, and the pattern names no locale-dependent field and a fixed zone.
create function report_row_head(p_id text, p_period_start timestamptz, p_measures jsonb)
returns text
language sql immutable parallel safe as $$
    select '{"id":' || to_json(p_id)::text
        || ',"period_start":"'
        || to_char(p_period_start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        || '","measures":' || p_measures::text || ',"metrics":{"service_level":'
$$;

-- The metrics after the service level; the generated column passes them, so that the
-- metric functions are bound when the column is defined, as a view binds them.
create function report_row_tail(
    p_asa_ms numeric, p_aht_ms numeric, p_abandonment_rate numeric, p_occupancy numeric,
    p_compliance_abandonment_rate numeric
) returns text
language sql immutable parallel safe as $$
    select ',"asa_ms":' || report_number(p_asa_ms)
        || ',"aht_ms":' || report_number(p_aht_ms)
        || ',"abandonment_rate":' || report_number(p_abandonment_rate)
        || ',"occupancy":' || report_number(p_occupancy)
        || ',"compliance_abandonment_rate":' || report_number(p_compliance_abandonment_rate)
        || '}}'
$$;

-- The service level under each bound of the wait histogram (answered_wait_le_<bound>s,
-- 0011): answered_within, so the service level, is the same for every threshold from one
-- bound up to the next, so these eleven values are every service level a queue's
-- threshold can give. A running sum over the buckets with service_level's denominator
-- (0005): eleven calls of service_level read the same measures 99 times, which cost the
-- projection twice as much. A test compares each value with service_level under every
-- threshold from 0 to 400 s.
create function report_service_levels(p_measures jsonb) returns text[]
language plpgsql immutable parallel safe as $$
declare
    answered_or_abandoned bigint := measure(p_measures, 'answered')
        + measure(p_measures, 'abandoned') - measure(p_measures, 'abandoned_short');
    within bigint := 0;
    bound integer;
    levels text[] := '{}';
begin
    foreach bound in array array[5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300] loop
        within := within + measure(p_measures, 'answered_wait_le_' || bound || 's');
        levels := levels || report_number(ratio(within, answered_or_abandoned));
    end loop;
    return levels;
end
$$;

-- Which element of report_service_levels a threshold reads: the largest bound not above
-- it, or the first (answered_within counts the first bucket under any threshold).
create function service_level_slot(p_threshold_s integer) returns integer
language sql immutable parallel safe as $$
    select 1 + width_bucket(p_threshold_s, array[10, 15, 20, 30, 45, 60, 90, 120, 180, 300])
$$;

alter table intervals
    add column report_head text generated always as
        (report_row_head(dimension_id, interval_start, measures)) stored,
    add column report_service_levels text[] generated always as
        (case when dimension = 'queue' then report_service_levels(measures) end) stored,
    add column report_tail text generated always as (report_row_tail(
        asa_ms(measures), aht_ms(measures), abandonment_rate(measures), occupancy(measures),
        compliance_abandonment_rate(measures))) stored;

alter table rollups
    add column report_head text generated always as
        (report_row_head(dimension_id, period_start, measures)) stored,
    add column report_service_levels text[] generated always as
        (case when dimension = 'queue' then report_service_levels(measures) end) stored,
    add column report_tail text generated always as (report_row_tail(
        asa_ms(measures), aht_ms(measures), abandonment_rate(measures), occupancy(measures),
        compliance_abandonment_rate(measures))) stored;

-- The report: the rows of report_intervals (same periods, same tenant, same ids), each as
-- the JSON object the gateway serves, ordered by id and period. The conditions are on the
-- union, not inside it, so that the planner prunes the other table and walks the primary
-- key in report order (no sort of wide rows); the queues' thresholds are read once.
create function report_rows(
    p_dimension text, p_ids text[], p_from timestamptz, p_to timestamptz, p_granularity text
) returns setof text
language sql stable security invoker as $$
    select r.report_head
        || case when r.dimension = 'queue'
                then coalesce(
                         r.report_service_levels[service_level_slot(t.threshold_s)], 'null')
                     || ',"service_level_threshold_s":' || t.threshold_s
                else 'null,"service_level_threshold_s":null' end
        || r.report_tail
    from (
        select m.tenant, '15min' as grain, m.dimension, m.dimension_id,
               m.interval_start as period_start,
               m.report_head, m.report_service_levels, m.report_tail
        from intervals m
        union all
        select m.tenant, m.grain, m.dimension, m.dimension_id, m.period_start,
               m.report_head, m.report_service_levels, m.report_tail
        from rollups m
    ) r
    cross join lateral (
        select coalesce(
            ((select jsonb_object_agg(q.queue_id, q.service_level_threshold_s)
              from queue_settings q) ->> r.dimension_id)::integer,
            20) as threshold_s
    ) t
    where r.tenant = current_setting('plateau.tenant', true)
      and r.grain = report_granularity(p_dimension, p_granularity)
      and r.dimension = p_dimension
      and (p_ids is null or r.dimension_id = any (p_ids))
      and r.period_start >= p_from and r.period_start < p_to
    order by r.dimension_id, r.period_start
$$;

do $$
declare
    reader_role text := 'plateau_' || current_schema() || '_reader';
begin
    execute format(
        'grant execute on function report_rows(text, text[], timestamptz, timestamptz, text) '
        'to %I',
        reader_role
    );
end
$$;
