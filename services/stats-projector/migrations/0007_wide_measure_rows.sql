-- One row per queue, agent or campaign and period, with its measures as one JSON object,
-- instead of one row per measure: a 30-day report of 20 queues reads 57,600 rows rather
-- than ten times as many, and returns them as stored (the `measures` of report_intervals),
-- and an event's deltas touch a row per interval rather than a row per measure.
--
-- `intervals` replaces the rows of `interval_measures` and `rollups` those of
-- `rollup_measures`; both old names stay, as views that give one row per measure, for
-- anyone who reads them that way. A measure that comes back to zero is removed from its
-- object, and a row whose object is empty is deleted, so incremental and rebuilt read
-- models hold exactly the same rows.

-- The sum of two objects of measures, without the measures whose sum is zero.
create function measures_add(p_a jsonb, p_b jsonb) returns jsonb
language sql immutable parallel safe as $$
    select coalesce(jsonb_object_agg(s.key, s.total), '{}'::jsonb)
    from (
        select e.key, sum(e.value::bigint)::bigint as total
        from (
            select * from jsonb_each_text(p_a) union all select * from jsonb_each_text(p_b)
        ) e (key, value)
        group by e.key
    ) s
    where s.total <> 0
$$;

-- The sum of objects of measures over rows (any range of periods: measures are additive).
create aggregate measures_sum(jsonb) (sfunc = measures_add, stype = jsonb, initcond = '{}');

create table intervals (
    tenant          text not null,
    dimension       text not null check (dimension in ('queue', 'agent', 'campaign')),
    dimension_id    text not null,
    interval_start  timestamptz not null,
    measures        jsonb not null,
    primary key (tenant, dimension, dimension_id, interval_start)
);
-- Reports of every id of a dimension over a time range.
create index intervals_by_time on intervals (tenant, dimension, interval_start);

create table rollups (
    tenant          text not null,
    grain           text not null check (grain in ('hour', 'day', 'month')),
    dimension       text not null check (dimension in ('queue', 'agent', 'campaign')),
    dimension_id    text not null,
    period_start    timestamptz not null,
    measures        jsonb not null,
    primary key (tenant, grain, dimension, dimension_id, period_start)
);
create index rollups_by_time on rollups (tenant, grain, dimension, period_start);

insert into intervals (tenant, dimension, dimension_id, interval_start, measures)
select tenant, dimension, dimension_id, interval_start, jsonb_object_agg(measure, value)
from interval_measures where value <> 0
group by tenant, dimension, dimension_id, interval_start;

insert into rollups (tenant, grain, dimension, dimension_id, period_start, measures)
select tenant, grain, dimension, dimension_id, period_start, jsonb_object_agg(measure, value)
from rollup_measures where value <> 0
group by tenant, grain, dimension, dimension_id, period_start;

drop view agent_today_metrics, queue_today_metrics, queue_today, campaign_today,
    campaign_last_30_days, agent_live;
drop table interval_measures, rollup_measures;

create view interval_measures with (security_invoker = true) as
select i.tenant, i.dimension, i.dimension_id, i.interval_start, m.key as measure,
       m.value::bigint as value
from intervals i, jsonb_each_text(i.measures) m;

create view rollup_measures with (security_invoker = true) as
select r.tenant, r.grain, r.dimension, r.dimension_id, r.period_start, m.key as measure,
       m.value::bigint as value
from rollups r, jsonb_each_text(r.measures) m;

-- The views of 0002 and 0005, the same columns, over the rows of objects.
create view queue_today with (security_invoker = true) as
select tenant, dimension_id as queue_id, measures
from rollups
where grain = 'day' and dimension = 'queue' and period_start = tenant_today_start(tenant);

create view campaign_today with (security_invoker = true) as
select tenant, dimension_id as campaign_id, measures
from rollups
where grain = 'day' and dimension = 'campaign' and period_start = tenant_today_start(tenant);

create view campaign_last_30_days with (security_invoker = true) as
select tenant, dimension_id as campaign_id, measures_sum(measures) as measures
from rollups
where grain = 'day' and dimension = 'campaign'
  and period_start > tenant_today_start(tenant) - interval '30 days'
group by tenant, dimension_id;

create view agent_live with (security_invoker = true) as
select s.tenant, s.agent_id, s.state, s.since, s.pause_code, s.call_id, s.queue_id,
       coalesce((
           select (r.measures ->> 'handled')::bigint from rollups r
           where r.tenant = s.tenant and r.grain = 'day' and r.dimension = 'agent'
             and r.dimension_id = s.agent_id
             and r.period_start = tenant_today_start(s.tenant)
       ), 0) as handled_today
from agent_status s
where s.state <> 'logged_out';

create view queue_today_metrics with (security_invoker = true) as
select t.tenant, t.queue_id, t.measures,
       coalesce(q.service_level_threshold_s, 20) as service_level_threshold_s,
       service_level(t.measures, coalesce(q.service_level_threshold_s, 20)) as service_level,
       asa_ms(t.measures) as asa_ms,
       aht_ms(t.measures) as aht_ms,
       abandonment_rate(t.measures) as abandonment_rate
from queue_today t
left join queue_settings q on q.tenant = t.tenant and q.queue_id = t.queue_id;

create view agent_today_metrics with (security_invoker = true) as
select tenant, dimension_id as agent_id, measures,
       occupancy(measures) as occupancy, aht_ms(measures) as aht_ms
from rollups
where grain = 'day' and dimension = 'agent' and period_start = tenant_today_start(tenant);

-- Add deltas (one per measure, as before) to the rows of their intervals and roll-ups, in
-- key order, so that transactions touching the same rows lock them in the same order.
create or replace function add_measures(
    p_tenant text,
    i_dimension text[], i_dimension_id text[], i_interval timestamptz[], i_measure text[],
    i_value bigint[],
    r_grain text[], r_dimension text[], r_dimension_id text[], r_period timestamptz[],
    r_measure text[], r_value bigint[]
) returns void language plpgsql as $$
declare
    z_grain text[];
    z_dimension text[];
    z_dimension_id text[];
    z_period timestamptz[];
begin
    if coalesce(cardinality(i_value), 0) = 0 then
        return;
    end if;
    with added as (
        insert into intervals as m (tenant, dimension, dimension_id, interval_start, measures)
        select p_tenant, u.d, u.i, u.t, jsonb_object_agg(u.measure, u.v)
        from unnest(i_dimension, i_dimension_id, i_interval, i_measure, i_value)
            as u(d, i, t, measure, v)
        group by u.d, u.i, u.t
        order by u.d, u.i, u.t
        on conflict (tenant, dimension, dimension_id, interval_start)
        do update set measures = measures_add(m.measures, excluded.measures)
        returning m.dimension, m.dimension_id, m.interval_start, m.measures
    )
    select array_agg(a.dimension), array_agg(a.dimension_id), array_agg(a.interval_start)
    into z_dimension, z_dimension_id, z_period
    from added a where a.measures = '{}'::jsonb;
    -- Rows brought back to nothing are rare (a recomputed call moving a count to another
    -- interval); delete exactly those, by primary key.
    if z_dimension is not null then
        delete from intervals m
        using unnest(z_dimension, z_dimension_id, z_period) as z(d, i, t)
        where m.tenant = p_tenant and m.dimension = z.d and m.dimension_id = z.i
          and m.interval_start = z.t and m.measures = '{}'::jsonb;
    end if;
    with added as (
        insert into rollups as m (tenant, grain, dimension, dimension_id, period_start, measures)
        select p_tenant, u.g, u.d, u.i, u.t, jsonb_object_agg(u.measure, u.v)
        from unnest(r_grain, r_dimension, r_dimension_id, r_period, r_measure, r_value)
            as u(g, d, i, t, measure, v)
        group by u.g, u.d, u.i, u.t
        order by u.g, u.d, u.i, u.t
        on conflict (tenant, grain, dimension, dimension_id, period_start)
        do update set measures = measures_add(m.measures, excluded.measures)
        returning m.grain, m.dimension, m.dimension_id, m.period_start, m.measures
    )
    select array_agg(a.grain), array_agg(a.dimension), array_agg(a.dimension_id),
           array_agg(a.period_start)
    into z_grain, z_dimension, z_dimension_id, z_period
    from added a where a.measures = '{}'::jsonb;
    if z_grain is not null then
        delete from rollups m
        using unnest(z_grain, z_dimension, z_dimension_id, z_period) as z(g, d, i, t)
        where m.tenant = p_tenant and m.grain = z.g and m.dimension = z.d
          and m.dimension_id = z.i and m.period_start = z.t and m.measures = '{}'::jsonb;
    end if;
end
$$;

-- report_intervals (0006) over the rows of objects: each row is returned as stored.
create or replace function report_intervals(
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
        select m.dimension, m.dimension_id, m.interval_start, m.measures
        from intervals m
        where m.tenant = current_setting('plateau.tenant', true)
          and m.dimension = p_dimension
          and (p_ids is null or m.dimension_id = any (p_ids))
          and m.interval_start >= p_from and m.interval_start < p_to
        order by m.dimension_id, m.interval_start;
    else
        return query
        select m.dimension, m.dimension_id, m.period_start, m.measures
        from rollups m
        where m.tenant = current_setting('plateau.tenant', true)
          and m.grain = p_granularity
          and m.dimension = p_dimension
          and (p_ids is null or m.dimension_id = any (p_ids))
          and m.period_start >= p_from and m.period_start < p_to
        order by m.dimension_id, m.period_start;
    end if;
end
$$;

do $$
declare
    service_role text := 'plateau_' || current_schema();
    reader_role  text := 'plateau_' || current_schema() || '_reader';
    read_model   text;
    view_name    text;
begin
    foreach read_model in array array['intervals', 'rollups'] loop
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
    foreach view_name in array array[
        'interval_measures', 'rollup_measures', 'queue_today', 'campaign_today',
        'campaign_last_30_days', 'agent_live', 'queue_today_metrics', 'agent_today_metrics'
    ] loop
        execute format('grant select on %I to %I', view_name, reader_role);
    end loop;
end
$$;
