-- Server-side steps of the projection: each event's writes in one round trip. The
-- projector computes everything (docs/metrics.md lives in its Python domain); these
-- functions only apply the result, so a change costs one call instead of a dozen
-- statements. They run with the caller's rights and row-level security.

-- Add deltas to the interval measures and their roll-ups; drop rows left at zero, so that
-- incremental and rebuilt read models hold exactly the same rows.
create function add_measures(
    p_tenant text,
    i_dimension text[], i_dimension_id text[], i_interval timestamptz[], i_measure text[],
    i_value bigint[],
    r_grain text[], r_dimension text[], r_dimension_id text[], r_period timestamptz[],
    r_measure text[], r_value bigint[]
) returns void language plpgsql as $$
declare
    z_dimension text[];
    z_dimension_id text[];
    z_interval timestamptz[];
    z_grain text[];
    z_measure text[];
begin
    if coalesce(cardinality(i_value), 0) = 0 then
        return;
    end if;
    with added as (
        insert into interval_measures as m
            (tenant, dimension, dimension_id, interval_start, measure, value)
        select p_tenant, *
        from unnest(i_dimension, i_dimension_id, i_interval, i_measure, i_value)
        on conflict (tenant, dimension, dimension_id, interval_start, measure)
        do update set value = m.value + excluded.value
        returning m.dimension, m.dimension_id, m.interval_start, m.measure, m.value
    )
    select array_agg(a.dimension), array_agg(a.dimension_id), array_agg(a.interval_start),
           array_agg(a.measure)
    into z_dimension, z_dimension_id, z_interval, z_measure
    from added a where a.value = 0;
    -- Rows brought back to zero are rare (a recomputed call moving a count to another
    -- interval); delete exactly those, by primary key.
    if z_dimension is not null then
        delete from interval_measures m
        using unnest(z_dimension, z_dimension_id, z_interval, z_measure)
            as z(dimension, dimension_id, interval_start, measure)
        where m.tenant = p_tenant and m.dimension = z.dimension
          and m.dimension_id = z.dimension_id and m.interval_start = z.interval_start
          and m.measure = z.measure and m.value = 0;
    end if;
    with added as (
        insert into rollup_measures as m
            (tenant, grain, dimension, dimension_id, period_start, measure, value)
        select p_tenant, *
        from unnest(r_grain, r_dimension, r_dimension_id, r_period, r_measure, r_value)
        on conflict (tenant, grain, dimension, dimension_id, period_start, measure)
        do update set value = m.value + excluded.value
        returning m.grain, m.dimension, m.dimension_id, m.period_start, m.measure, m.value
    )
    select array_agg(a.grain), array_agg(a.dimension), array_agg(a.dimension_id),
           array_agg(a.period_start), array_agg(a.measure)
    into z_grain, z_dimension, z_dimension_id, z_interval, z_measure
    from added a where a.value = 0;
    if z_grain is not null then
        delete from rollup_measures m
        using unnest(z_grain, z_dimension, z_dimension_id, z_interval, z_measure)
            as z(grain, dimension, dimension_id, period_start, measure)
        where m.tenant = p_tenant and m.grain = z.grain and m.dimension = z.dimension
          and m.dimension_id = z.dimension_id and m.period_start = z.period_start
          and m.measure = z.measure and m.value = 0;
    end if;
end
$$;

-- Keep a call fact; when it is new, return the call's facts (this one included) and the
-- contribution the call last added. A call's facts arrive on several partitions, which
-- several consumers (or replicas) may apply at once: the call is locked until commit, so
-- each recomputation sees every fact committed before it and the deltas add up.
create function keep_call_fact(
    p_tenant text, p_call_id text, p_stream text, p_stream_version integer, p_fact jsonb,
    out kept boolean, out facts jsonb, out contribution jsonb
) language plpgsql as $$
begin
    perform pg_advisory_xact_lock(hashtextextended(p_tenant || '/' || p_call_id, 0));
    insert into call_facts (tenant, call_id, stream, stream_version, fact)
    values (p_tenant, p_call_id, p_stream, p_stream_version, p_fact)
    on conflict do nothing;
    kept := found;
    if not kept then
        return;
    end if;
    select coalesce(jsonb_agg(f.fact), '[]'::jsonb) into facts
    from call_facts f where f.tenant = p_tenant and f.call_id = p_call_id;
    select coalesce(jsonb_agg(jsonb_build_array(
        c.dimension, c.dimension_id, (extract(epoch from c.interval_start) * 1000)::bigint,
        c.measure, c.value)), '[]'::jsonb)
    into contribution
    from call_contributions c where c.tenant = p_tenant and c.call_id = p_call_id;
end
$$;

-- Everything a call's recomputation changes: its contribution (replaced), the measures
-- (by the deltas), its detail record, whether it waits in a queue, and the notification.
create function project_call(
    p_tenant text, p_call_id text,
    i_dimension text[], i_dimension_id text[], i_interval timestamptz[], i_measure text[],
    i_value bigint[],
    r_grain text[], r_dimension text[], r_dimension_id text[], r_period timestamptz[],
    r_measure text[], r_value bigint[],
    p_direction text, p_started_at timestamptz, p_answered_at timestamptz,
    p_ended_at timestamptz, p_outcome text, p_end_cause text, p_ani text, p_dnis text,
    p_campaign_id text, p_queues text[], p_agents text[], p_wait_ms bigint, p_talk_ms bigint,
    p_hold_ms bigint, p_wrap_up_ms bigint, p_transfers integer,
    p_waiting_queue text, p_waiting_since timestamptz,
    p_channel text, p_notification text
) returns void language plpgsql as $$
begin
    if coalesce(cardinality(i_value), 0) > 0 then
        perform add_measures(
            p_tenant, i_dimension, i_dimension_id, i_interval, i_measure, i_value,
            r_grain, r_dimension, r_dimension_id, r_period, r_measure, r_value);
        -- The call's kept contribution moves by the same delta as the measures.
        insert into call_contributions as c
            (tenant, call_id, dimension, dimension_id, interval_start, measure, value)
        select p_tenant, p_call_id, *
        from unnest(i_dimension, i_dimension_id, i_interval, i_measure, i_value)
        on conflict (tenant, call_id, dimension, dimension_id, interval_start, measure)
        do update set value = c.value + excluded.value;
        delete from call_contributions
        where tenant = p_tenant and call_id = p_call_id and value = 0;
    end if;
    insert into call_records as r (tenant, call_id, direction, started_at, answered_at,
        ended_at, outcome, end_cause, ani, dnis, campaign_id, queues, agents, wait_ms,
        talk_ms, hold_ms, wrap_up_ms, transfers)
    values (p_tenant, p_call_id, p_direction, p_started_at, p_answered_at, p_ended_at,
        p_outcome, p_end_cause, p_ani, p_dnis, p_campaign_id, p_queues, p_agents, p_wait_ms,
        p_talk_ms, p_hold_ms, p_wrap_up_ms, p_transfers)
    on conflict (tenant, call_id) do update set
        direction = excluded.direction, started_at = excluded.started_at,
        answered_at = excluded.answered_at, ended_at = excluded.ended_at,
        outcome = excluded.outcome, end_cause = excluded.end_cause, ani = excluded.ani,
        dnis = excluded.dnis, campaign_id = excluded.campaign_id, queues = excluded.queues,
        agents = excluded.agents, wait_ms = excluded.wait_ms, talk_ms = excluded.talk_ms,
        hold_ms = excluded.hold_ms, wrap_up_ms = excluded.wrap_up_ms,
        transfers = excluded.transfers;
    if p_waiting_queue is null then
        delete from queue_waiting where tenant = p_tenant and call_id = p_call_id;
    else
        insert into queue_waiting as w (tenant, call_id, queue_id, waiting_since)
        values (p_tenant, p_call_id, p_waiting_queue, p_waiting_since)
        on conflict (tenant, call_id) do update set
            queue_id = excluded.queue_id, waiting_since = excluded.waiting_since;
    end if;
    if p_channel is not null then
        perform pg_notify(p_channel, p_notification);
    end if;
end
$$;

-- An agent's state change: the span it closed (if any) and its measures, the new status,
-- and the notification.
create function project_agent(
    p_tenant text, p_agent_id text,
    s_opened_by integer, s_state text, s_pause_code text, s_call_id text,
    s_started_at timestamptz, s_ended_at timestamptz,
    i_dimension text[], i_dimension_id text[], i_interval timestamptz[], i_measure text[],
    i_value bigint[],
    r_grain text[], r_dimension text[], r_dimension_id text[], r_period timestamptz[],
    r_measure text[], r_value bigint[],
    p_state text, p_since timestamptz, p_pause_code text, p_call_id text, p_queue_id text,
    p_extension text, p_skills text[], p_version integer,
    p_channel text, p_notification text
) returns void language plpgsql as $$
begin
    if s_opened_by is not null then
        insert into agent_state_spans (tenant, agent_id, opened_by, state, pause_code, call_id,
            started_at, ended_at)
        values (p_tenant, p_agent_id, s_opened_by, s_state, s_pause_code, s_call_id,
            s_started_at, s_ended_at);
        perform add_measures(
            p_tenant, i_dimension, i_dimension_id, i_interval, i_measure, i_value,
            r_grain, r_dimension, r_dimension_id, r_period, r_measure, r_value);
    end if;
    insert into agent_status as s (tenant, agent_id, state, since, pause_code, call_id,
        queue_id, extension, skills, version)
    values (p_tenant, p_agent_id, p_state, p_since, p_pause_code, p_call_id, p_queue_id,
        p_extension, p_skills, p_version)
    on conflict (tenant, agent_id) do update set
        state = excluded.state, since = excluded.since, pause_code = excluded.pause_code,
        call_id = excluded.call_id, queue_id = excluded.queue_id,
        extension = excluded.extension, skills = excluded.skills, version = excluded.version;
    if p_channel is not null then
        perform pg_notify(p_channel, p_notification);
    end if;
end
$$;

do $$
declare
    service_role text := 'plateau_' || current_schema();
    signature    text;
begin
    foreach signature in array array[
        'add_measures(text, text[], text[], timestamptz[], text[], bigint[], text[], text[], '
            'text[], timestamptz[], text[], bigint[])',
        'keep_call_fact(text, text, text, integer, jsonb)',
        'project_call(text, text, text[], text[], timestamptz[], text[], bigint[], '
            'text[], text[], text[], timestamptz[], text[], bigint[], text, timestamptz, timestamptz, timestamptz, text, text, text, '
            'text, text, text[], text[], bigint, bigint, bigint, bigint, integer, text, '
            'timestamptz, text, text)',
        'project_agent(text, text, integer, text, text, text, timestamptz, timestamptz, '
            'text[], text[], timestamptz[], text[], bigint[], text[], text[], text[], '
            'timestamptz[], text[], bigint[], text, timestamptz, text, text, text, text, '
            'text[], integer, text, text)'
    ] loop
        execute format('revoke execute on function %s from public', signature);
        execute format('grant execute on function %s to %I', signature, service_role);
    end loop;
end
$$;
