-- Server-side steps of the projection for a batch of events (one consumer poll, one
-- transaction): each call touched by the batch is recomputed once, from all its facts,
-- and each agent's changes are written together, so a batch costs a few round trips
-- instead of a few per event. Rows are written in key order (add_measures of 0007 too), so
-- that concurrent batches lock shared rows (a queue's current interval) in the same order
-- and cannot deadlock.

-- Keep a batch's call facts; return, for each call one of them is new for, the call's facts
-- (those included) and the contribution it last added. The calls are locked until commit,
-- in a fixed order (see keep_call_fact in 0003).
create function keep_call_facts(
    p_tenant text, p_call_id text[], p_stream text[], p_stream_version integer[],
    p_fact jsonb[]
) returns table (kept_call_id text, facts jsonb, contribution jsonb)
language plpgsql as $$
declare
    v_calls text[];
begin
    perform pg_advisory_xact_lock(l.key)
    from (
        select distinct hashtextextended(p_tenant || '/' || c.id, 0) as key
        from unnest(p_call_id) as c(id)
        order by 1
    ) l;
    with kept as (
        insert into call_facts as f (tenant, call_id, stream, stream_version, fact)
        select p_tenant, u.c, u.s, u.v, u.f
        from unnest(p_call_id, p_stream, p_stream_version, p_fact) as u(c, s, v, f)
        order by u.c, u.s, u.v
        on conflict do nothing
        returning f.call_id
    )
    select array_agg(distinct k.call_id) into v_calls from kept k;
    return query
    select c.id,
           (select coalesce(jsonb_agg(f.fact), '[]'::jsonb) from call_facts f
            where f.tenant = p_tenant and f.call_id = c.id),
           (select coalesce(jsonb_agg(jsonb_build_array(
                x.dimension, x.dimension_id,
                (extract(epoch from x.interval_start) * 1000)::bigint, x.measure, x.value)),
                '[]'::jsonb)
            from call_contributions x where x.tenant = p_tenant and x.call_id = c.id)
    from unnest(coalesce(v_calls, '{}'::text[])) as c(id);
end
$$;

-- Everything the recomputation of a batch's calls changes: their contributions (moved by
-- their deltas), the measures (by the deltas' sum), their detail records (rows of
-- call_records as JSON), which of them wait in a queue, and one notification per call.
create function project_calls(
    p_tenant text,
    i_dimension text[], i_dimension_id text[], i_interval timestamptz[], i_measure text[],
    i_value bigint[],
    r_grain text[], r_dimension text[], r_dimension_id text[], r_period timestamptz[],
    r_measure text[], r_value bigint[],
    c_call_id text[], c_dimension text[], c_dimension_id text[], c_interval timestamptz[],
    c_measure text[], c_value bigint[],
    p_records jsonb, p_waiting jsonb, p_not_waiting text[],
    p_channel text, p_notifications text[]
) returns void language plpgsql as $$
begin
    perform add_measures(
        p_tenant, i_dimension, i_dimension_id, i_interval, i_measure, i_value,
        r_grain, r_dimension, r_dimension_id, r_period, r_measure, r_value);
    if coalesce(cardinality(c_value), 0) > 0 then
        insert into call_contributions as c
            (tenant, call_id, dimension, dimension_id, interval_start, measure, value)
        select p_tenant, u.*
        from unnest(c_call_id, c_dimension, c_dimension_id, c_interval, c_measure, c_value)
            as u(call_id, dimension, dimension_id, interval_start, measure, value)
        order by 2, 3, 4, 5, 6
        on conflict (tenant, call_id, dimension, dimension_id, interval_start, measure)
        do update set value = c.value + excluded.value;
        delete from call_contributions
        where tenant = p_tenant and call_id = any (c_call_id) and value = 0;
    end if;
    insert into call_records as r
    select * from jsonb_populate_recordset(null::call_records, p_records) n
    order by n.call_id
    on conflict (tenant, call_id) do update set
        direction = excluded.direction, started_at = excluded.started_at,
        answered_at = excluded.answered_at, ended_at = excluded.ended_at,
        outcome = excluded.outcome, end_cause = excluded.end_cause, ani = excluded.ani,
        dnis = excluded.dnis, campaign_id = excluded.campaign_id, queues = excluded.queues,
        agents = excluded.agents, wait_ms = excluded.wait_ms, talk_ms = excluded.talk_ms,
        hold_ms = excluded.hold_ms, wrap_up_ms = excluded.wrap_up_ms,
        transfers = excluded.transfers;
    if coalesce(cardinality(p_not_waiting), 0) > 0 then
        delete from queue_waiting where tenant = p_tenant and call_id = any (p_not_waiting);
    end if;
    insert into queue_waiting as w
    select * from jsonb_populate_recordset(null::queue_waiting, p_waiting) n
    order by n.call_id
    on conflict (tenant, call_id) do update set
        queue_id = excluded.queue_id, waiting_since = excluded.waiting_since;
    if p_channel is not null then
        perform pg_notify(p_channel, n) from unnest(p_notifications) as n;
    end if;
end
$$;

-- A batch's agent state changes: the spans they closed (rows of agent_state_spans as
-- JSON) and their measures, each agent's latest status, and one notification per agent.
create function project_agents(
    p_tenant text, p_spans jsonb,
    i_dimension text[], i_dimension_id text[], i_interval timestamptz[], i_measure text[],
    i_value bigint[],
    r_grain text[], r_dimension text[], r_dimension_id text[], r_period timestamptz[],
    r_measure text[], r_value bigint[],
    p_statuses jsonb, p_channel text, p_notifications text[]
) returns void language plpgsql as $$
begin
    insert into agent_state_spans
    select * from jsonb_populate_recordset(null::agent_state_spans, p_spans);
    perform add_measures(
        p_tenant, i_dimension, i_dimension_id, i_interval, i_measure, i_value,
        r_grain, r_dimension, r_dimension_id, r_period, r_measure, r_value);
    insert into agent_status as s
    select * from jsonb_populate_recordset(null::agent_status, p_statuses) n
    order by n.agent_id
    on conflict (tenant, agent_id) do update set
        state = excluded.state, since = excluded.since, pause_code = excluded.pause_code,
        call_id = excluded.call_id, queue_id = excluded.queue_id,
        extension = excluded.extension, skills = excluded.skills, version = excluded.version;
    if p_channel is not null then
        perform pg_notify(p_channel, n) from unnest(p_notifications) as n;
    end if;
end
$$;

do $$
declare
    service_role text := 'plateau_' || current_schema();
    signature    text;
begin
    foreach signature in array array[
        'keep_call_facts(text, text[], text[], integer[], jsonb[])',
        'project_calls(text, text[], text[], timestamptz[], text[], bigint[], text[], '
            'text[], text[], timestamptz[], text[], bigint[], text[], text[], text[], '
            'timestamptz[], text[], bigint[], jsonb, jsonb, text[], text, text[])',
        'project_agents(text, jsonb, text[], text[], timestamptz[], text[], bigint[], '
            'text[], text[], text[], timestamptz[], text[], bigint[], jsonb, text, text[])'
    ] loop
        execute format('revoke execute on function %s from public', signature);
        execute format('grant execute on function %s to %I', signature, service_role);
    end loop;
end
$$;
