-- Live supervision views over the read models. They run with the privileges and the
-- row-level security of whoever queries them (security_invoker), so the reader role sees
-- only its session's tenant through them as through the tables. Metrics (service level,
-- ASA, AHT...) are computed from these measures by the formulas of docs/metrics.md.

-- The tenant's "today": the local day now, in the tenant's time zone.
create function tenant_today_start(p_tenant text) returns timestamptz
language sql stable as $$
    select date_trunc('day', now() at time zone z.tz) at time zone z.tz
    from (select coalesce(
        (select time_zone from tenant_settings where tenant = p_tenant), 'Africa/Brazzaville'
    ) as tz) z
$$;

-- Per queue: calls waiting now and since when the longest has waited.
create view queue_live with (security_invoker = true) as
select tenant, queue_id, count(*) as calls_waiting, min(waiting_since) as longest_waiting_since
from queue_waiting
group by tenant, queue_id;

-- Per queue: today's measures (offered, answered, abandoned, answer_wait_ms, handled,
-- handle_ms, answered_wait_le_<s>s...) as one JSON object.
create view queue_today with (security_invoker = true) as
select tenant, dimension_id as queue_id, jsonb_object_agg(measure, value) as measures
from rollup_measures
where grain = 'day' and dimension = 'queue' and period_start = tenant_today_start(tenant)
group by tenant, dimension_id;

-- Per campaign: today's measures, and the sum over the last 30 local days (today included).
create view campaign_today with (security_invoker = true) as
select tenant, dimension_id as campaign_id, jsonb_object_agg(measure, value) as measures
from rollup_measures
where grain = 'day' and dimension = 'campaign' and period_start = tenant_today_start(tenant)
group by tenant, dimension_id;

create view campaign_last_30_days with (security_invoker = true) as
select tenant, campaign_id, jsonb_object_agg(measure, value) as measures
from (
    select tenant, dimension_id as campaign_id, measure, sum(value) as value
    from rollup_measures
    where grain = 'day' and dimension = 'campaign'
      and period_start > tenant_today_start(tenant) - interval '30 days'
    group by tenant, dimension_id, measure
) m
group by tenant, campaign_id;

-- Per agent: state, since when, pause code, and calls handled today.
create view agent_live with (security_invoker = true) as
select s.tenant, s.agent_id, s.state, s.since, s.pause_code, s.call_id, s.queue_id,
       coalesce((
           select r.value from rollup_measures r
           where r.tenant = s.tenant and r.grain = 'day' and r.dimension = 'agent'
             and r.dimension_id = s.agent_id and r.measure = 'handled'
             and r.period_start = tenant_today_start(s.tenant)
       ), 0) as handled_today
from agent_status s
where s.state <> 'logged_out';

-- Per queue: the logged-in agents who can take its calls (they have every skill it
-- requires), by state and pause code.
create view queue_agents_by_state with (security_invoker = true) as
select q.tenant, q.queue_id, s.state, s.pause_code, count(*) as agents
from queue_settings q
join agent_status s on s.tenant = q.tenant and q.required_skills <@ s.skills
where s.state <> 'logged_out'
group by q.tenant, q.queue_id, s.state, s.pause_code;

do $$
declare
    reader_role text := 'plateau_' || current_schema() || '_reader';
    view_name   text;
begin
    foreach view_name in array array[
        'queue_live', 'queue_today', 'campaign_today', 'campaign_last_30_days', 'agent_live',
        'queue_agents_by_state'
    ] loop
        execute format('grant select on %I to %I', view_name, reader_role);
    end loop;
    execute format(
        'grant execute on function tenant_today_start(text) to %I', reader_role
    );
end
$$;
