-- The metric formulas of docs/metrics.md, for readers of the read models (the access
-- gateway reads them under row-level security and shares no code with the projector).
-- Each takes a JSON object of measures (as the views give them) and returns the exact
-- value, or null when the denominator is zero. `metric_formulas` lists their versions.
-- The same formulas are in the projector's domain (metrics.py); a test checks that both
-- give the same figures.

create view metric_formulas (metric, version) as values
    ('service_level', 1), ('asa', 1), ('aht', 1), ('abandonment_rate', 1), ('occupancy', 1),
    ('compliance_abandonment_rate', 1);

create function measure(p_measures jsonb, p_name text) returns bigint
language sql immutable as $$ select coalesce((p_measures ->> p_name)::bigint, 0) $$;

-- Answers within a threshold, read down to the nearest histogram bound.
create function answered_within(p_measures jsonb, p_threshold_s integer) returns bigint
language sql immutable as $$
    with bounds as (
        select unnest(array[5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300]) as s
    ), effective as (
        select coalesce(max(s) filter (where s <= p_threshold_s), 5) as s from bounds
    )
    select coalesce(sum(measure(p_measures, 'answered_wait_le_' || b.s || 's')), 0)::bigint
    from bounds b, effective e where b.s <= e.s
$$;

create function ratio(p_numerator numeric, p_denominator numeric) returns numeric
language sql immutable as $$
    select case when p_denominator = 0 then null else p_numerator / p_denominator end
$$;

create function service_level(p_measures jsonb, p_threshold_s integer) returns numeric
language sql immutable as $$
    select ratio(answered_within(p_measures, p_threshold_s),
                 measure(p_measures, 'answered') + measure(p_measures, 'abandoned')
                 - measure(p_measures, 'abandoned_short'))
$$;

create function asa_ms(p_measures jsonb) returns numeric
language sql immutable as $$
    select ratio(measure(p_measures, 'answer_wait_ms'), measure(p_measures, 'answered'))
$$;

create function aht_ms(p_measures jsonb) returns numeric
language sql immutable as $$
    select ratio(measure(p_measures, 'handle_ms'), measure(p_measures, 'handled'))
$$;

create function abandonment_rate(p_measures jsonb) returns numeric
language sql immutable as $$
    select ratio(measure(p_measures, 'abandoned') - measure(p_measures, 'abandoned_short'),
                 measure(p_measures, 'offered') - measure(p_measures, 'abandoned_short'))
$$;

create function occupancy(p_measures jsonb) returns numeric
language sql immutable as $$
    select ratio(
        measure(p_measures, 'state_reserved_ms') + measure(p_measures, 'state_on_call_ms')
            + measure(p_measures, 'state_wrap_up_ms'),
        measure(p_measures, 'state_reserved_ms') + measure(p_measures, 'state_on_call_ms')
            + measure(p_measures, 'state_wrap_up_ms') + measure(p_measures, 'state_available_ms'))
$$;

create function compliance_abandonment_rate(p_measures jsonb) returns numeric
language sql immutable as $$
    select ratio(measure(p_measures, 'compliance_abandons'), measure(p_measures, 'live_answers'))
$$;

-- Per queue, today: the measures and the supervision metrics, with the queue's threshold.
create view queue_today_metrics with (security_invoker = true) as
select t.tenant, t.queue_id, t.measures,
       coalesce(q.service_level_threshold_s, 20) as service_level_threshold_s,
       service_level(t.measures, coalesce(q.service_level_threshold_s, 20)) as service_level,
       asa_ms(t.measures) as asa_ms,
       aht_ms(t.measures) as aht_ms,
       abandonment_rate(t.measures) as abandonment_rate
from queue_today t
left join queue_settings q on q.tenant = t.tenant and q.queue_id = t.queue_id;

-- Per agent, today: the measures, occupancy and average handle time.
create view agent_today_metrics with (security_invoker = true) as
select tenant, dimension_id as agent_id, measures,
       occupancy(measures) as occupancy, aht_ms(measures) as aht_ms
from (
    select tenant, dimension_id, jsonb_object_agg(measure, value) as measures
    from rollup_measures
    where grain = 'day' and dimension = 'agent' and period_start = tenant_today_start(tenant)
    group by tenant, dimension_id
) a;

do $$
declare
    reader_role text := 'plateau_' || current_schema() || '_reader';
begin
    execute format(
        'grant select on metric_formulas, queue_today_metrics, agent_today_metrics to %I',
        reader_role
    );
end
$$;
