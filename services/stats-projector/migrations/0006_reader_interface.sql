-- The reader interface of the reporting read models: what the access gateway calls.
--
-- report_intervals: the measures of each queue, agent or campaign per period, as one JSON
-- object of additive measures, so the metric functions of 0005 apply to it. Periods are
-- the 15-minute UTC intervals, or the hour, day and month roll-ups of the tenant's time
-- zone, keyed by the instant they start; the periods returned are those starting in
-- [p_from, p_to). It runs with the caller's rights (security invoker) and reads only the
-- tenant of the session (`plateau.tenant`), so row-level security applies as to the tables
-- and a session that set no tenant gets nothing.
create function report_intervals(
    p_dimension text, p_ids text[], p_from timestamptz, p_to timestamptz, p_granularity text
) returns table (dimension text, dimension_id text, period_start timestamptz, measures jsonb)
language plpgsql stable security invoker as $$
begin
    if p_dimension is null or p_dimension not in ('queue', 'agent', 'campaign') then
        raise exception 'unknown dimension %', coalesce(quote_literal(p_dimension), 'null')
            using errcode = '22023', hint = 'ask for queue, agent or campaign';
    end if;
    if p_granularity is null or p_granularity not in ('15min', 'hour', 'day', 'month') then
        raise exception 'unknown granularity %', coalesce(quote_literal(p_granularity), 'null')
            using errcode = '22023', hint = 'ask for 15min, hour, day or month';
    end if;
    if p_granularity = '15min' then
        return query
        select m.dimension, m.dimension_id, m.interval_start,
               jsonb_object_agg(m.measure, m.value)
        from interval_measures m
        where m.tenant = current_setting('plateau.tenant', true)
          and m.dimension = p_dimension
          and (p_ids is null or m.dimension_id = any (p_ids))
          and m.interval_start >= p_from and m.interval_start < p_to
        group by m.dimension, m.dimension_id, m.interval_start
        order by m.dimension_id, m.interval_start;
    else
        return query
        select m.dimension, m.dimension_id, m.period_start,
               jsonb_object_agg(m.measure, m.value)
        from rollup_measures m
        where m.tenant = current_setting('plateau.tenant', true)
          and m.grain = p_granularity
          and m.dimension = p_dimension
          and (p_ids is null or m.dimension_id = any (p_ids))
          and m.period_start >= p_from and m.period_start < p_to
        group by m.dimension, m.dimension_id, m.period_start
        order by m.dimension_id, m.period_start;
    end if;
end
$$;

-- report_provenance: for each source event store (by its schema: sip_gateway, acd,
-- dialer...), the highest store position the read models include, that event's chain hash
-- (as `plateau verify` prints it) and when it was applied. A report read in the same
-- transaction was computed from the events up to there (DESIGN §3). This is not tenant
-- data: a store's chain is one for all its tenants, so every reader sees the same rows.
create function report_provenance()
returns table (source text, "position" bigint, chain_head text, applied_at timestamptz)
language sql stable security invoker as $$
    select m.store, m.position, m.chain_hash, m.applied_at
    from consumer_store_marks m
    where m.consumer = 'stats-projector'
    order by m.store
$$;

do $$
declare
    reader_role text := 'plateau_' || current_schema() || '_reader';
begin
    execute format('grant select on consumer_store_marks to %I', reader_role);
    execute format(
        'grant execute on function report_intervals(text, text[], timestamptz, timestamptz, '
        'text), report_provenance() to %I',
        reader_role
    );
end
$$;
