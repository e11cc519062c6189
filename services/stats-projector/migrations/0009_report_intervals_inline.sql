-- report_intervals as one SQL query the planner inlines into the caller's: rows stream
-- straight from the index scan to the client, where the PL/pgSQL version of 0006/0007
-- first materialised them (a 30-day report of 20 queues is 57,600 rows, more than
-- work_mem, so that copy went to disk) and then sorted them. Rows now come in no
-- particular order: a caller that needs one says `order by dimension_id, period_start`.

-- The granularity asked for, once the dimension and the granularity are known to be valid
-- (otherwise an error that says what to ask for). Both branches of report_intervals
-- depend on its value, so it is always evaluated, once per query.
create function report_granularity(p_dimension text, p_granularity text) returns text
language plpgsql immutable as $$
begin
    if p_dimension is null or p_dimension not in ('queue', 'agent', 'campaign') then
        raise exception 'unknown dimension %', coalesce(quote_literal(p_dimension), 'null')
            using errcode = '22023', hint = 'ask for queue, agent or campaign';
    end if;
    if p_granularity is null or p_granularity not in ('15min', 'hour', 'day', 'month') then
        raise exception 'unknown granularity %', coalesce(quote_literal(p_granularity), 'null')
            using errcode = '22023', hint = 'ask for 15min, hour, day or month';
    end if;
    return p_granularity;
end
$$;

create or replace function report_intervals(
    p_dimension text, p_ids text[], p_from timestamptz, p_to timestamptz, p_granularity text
) returns table (dimension text, dimension_id text, period_start timestamptz, measures jsonb)
language sql stable security invoker as $$
    select m.dimension, m.dimension_id, m.interval_start, m.measures
    from intervals m
    where report_granularity(p_dimension, p_granularity) = '15min'
      and m.tenant = current_setting('plateau.tenant', true)
      and m.dimension = p_dimension
      and (p_ids is null or m.dimension_id = any (p_ids))
      and m.interval_start >= p_from and m.interval_start < p_to
    union all
    select m.dimension, m.dimension_id, m.period_start, m.measures
    from rollups m
    where m.grain = report_granularity(p_dimension, p_granularity)
      and m.tenant = current_setting('plateau.tenant', true)
      and m.dimension = p_dimension
      and (p_ids is null or m.dimension_id = any (p_ids))
      and m.period_start >= p_from and m.period_start < p_to
$$;

do $$
declare
    reader_role text := 'plateau_' || current_schema() || '_reader';
begin
    execute format(
        'grant execute on function report_granularity(text, text) to %I', reader_role
    );
end
$$;
