-- The stats projector's read models. Every table carries its tenant and is under
-- row-level security: the projector's own role writes every tenant's rows; the reader role
-- (granted to the access gateway's role) sees only the rows of the tenant its session set
-- with `set local plateau.tenant = '<tenant>'`, and nothing when it set none.
--
-- Measures are additive counters (counts, milliseconds) kept per 15-minute UTC interval
-- and rolled up per hour, day and month of the tenant's time zone; metrics are formulas
-- over them (docs/metrics.md).

-- The tenant's reporting time zone (Africa/Brazzaville when absent).
create table tenant_settings (
    tenant      text primary key,
    time_zone   text not null
);

-- Every fact of a call, whichever stream it came from: a call's record and contribution
-- are recomputed from all of them, so they do not depend on arrival order.
create table call_facts (
    tenant          text not null,
    call_id         text not null,
    stream          text not null,
    stream_version  integer not null,
    fact            jsonb not null,
    primary key (tenant, call_id, stream, stream_version)
);

-- What each call last added to the measures (the next recomputation applies the difference).
create table call_contributions (
    tenant          text not null,
    call_id         text not null,
    dimension       text not null,
    dimension_id    text not null,
    interval_start  timestamptz not null,
    measure         text not null,
    value           bigint not null,
    primary key (tenant, call_id, dimension, dimension_id, interval_start, measure)
);

-- Measures per queue, agent or campaign and 15-minute interval (UTC start).
create table interval_measures (
    tenant          text not null,
    dimension       text not null check (dimension in ('queue', 'agent', 'campaign')),
    dimension_id    text not null,
    interval_start  timestamptz not null,
    measure         text not null,
    value           bigint not null,
    primary key (tenant, dimension, dimension_id, interval_start, measure)
);
create index interval_measures_by_time on interval_measures (tenant, interval_start);

-- The same measures summed per hour, day and month of the tenant's time zone; period_start
-- is the instant the local period starts.
create table rollup_measures (
    tenant          text not null,
    grain           text not null check (grain in ('hour', 'day', 'month')),
    dimension       text not null check (dimension in ('queue', 'agent', 'campaign')),
    dimension_id    text not null,
    period_start    timestamptz not null,
    measure         text not null,
    value           bigint not null,
    primary key (tenant, grain, dimension, dimension_id, period_start, measure)
);

-- Call detail records.
create table call_records (
    tenant          text not null,
    call_id         text not null,
    direction       text,
    started_at      timestamptz,
    answered_at     timestamptz,
    ended_at        timestamptz,
    outcome         text not null,
    end_cause       text,
    ani             text,
    dnis            text,
    campaign_id     text,
    queues          text[] not null,
    agents          text[] not null,
    wait_ms         bigint not null,
    talk_ms         bigint not null,
    hold_ms         bigint not null,
    wrap_up_ms      bigint not null,
    transfers       integer not null,
    primary key (tenant, call_id)
);
create index call_records_by_start on call_records (tenant, started_at);

-- Calls waiting in a queue now (live supervision: calls waiting, longest wait).
create table queue_waiting (
    tenant          text not null,
    call_id         text not null,
    queue_id        text not null,
    waiting_since   timestamptz not null,
    primary key (tenant, call_id)
);
create index queue_waiting_by_queue on queue_waiting (tenant, queue_id, waiting_since);

-- Each agent's state now (live supervision: state, time in state, pause code).
create table agent_status (
    tenant          text not null,
    agent_id        text not null,
    state           text not null,
    since           timestamptz not null,
    pause_code      text,
    call_id         text,
    queue_id        text,
    extension       text,
    skills          text[] not null,
    version         integer not null,
    primary key (tenant, agent_id)
);

-- Agent state timelines: closed spans (the open one is in agent_status).
create table agent_state_spans (
    tenant          text not null,
    agent_id        text not null,
    opened_by       integer not null,  -- stream version of the fact that opened the span
    state           text not null,
    pause_code      text,
    call_id         text,
    started_at      timestamptz not null,
    ended_at        timestamptz not null,
    primary key (tenant, agent_id, opened_by)
);

-- Queue settings the reports need (service-level threshold and target, skills).
create table queue_settings (
    tenant                      text not null,
    queue_id                    text not null,
    name                        text not null,
    service_level_threshold_s   integer not null,
    service_level_target        double precision not null,
    required_skills             text[] not null,
    primary key (tenant, queue_id)
);

-- Row-level security on every read-model table; the reader role and its policies.
do $$
declare
    service_role text := 'plateau_' || current_schema();
    reader_role  text := 'plateau_' || current_schema() || '_reader';
    read_model   text;
begin
    if not exists (select 1 from pg_roles where rolname = reader_role) then
        execute format('create role %I nologin noinherit', reader_role);
    end if;
    execute format('grant usage on schema %I to %I', current_schema(), reader_role);
    foreach read_model in array array[
        'tenant_settings', 'call_facts', 'call_contributions', 'interval_measures',
        'rollup_measures', 'call_records', 'queue_waiting', 'agent_status',
        'agent_state_spans', 'queue_settings'
    ] loop
        execute format('alter table %I enable row level security', read_model);
        execute format('alter table %I force row level security', read_model);
        execute format(
            'create policy projector_writes on %I to %I using (true) with check (true)',
            read_model, service_role
        );
        execute format(
            'create policy tenant_reads on %I for select to %I '
            'using (tenant = current_setting(''plateau.tenant'', true))',
            read_model, reader_role
        );
        execute format('grant select on %I to %I', read_model, reader_role);
    end loop;
end
$$;
