-- The compliance ledger: one row per dial check, whoever made it. The dialer's rows
-- (source `dialer`) are keyed by its attempt id and joined from several streams that the
-- bus does not order with one another: the check and the dial (`contact-*` streams) and
-- the gateway's outcome facts (`call-*` streams). Each column is set by one kind of fact
-- only and never cleared, so the row is the same whatever order the facts arrive in and
-- however often they are replayed; `outcome` is recomputed from the kept columns.
-- The gateway's own refusals (`call.dial_refused`, source `gateway`) are rows of their
-- own, keyed by the refused call's id.
create table compliance_ledger (
    tenant                  text not null,
    ledger_id               text not null,  -- attempt id (dialer) or `gateway:<call id>`
    source                  text not null check (source in ('dialer', 'gateway')),
    attempt_id              text,
    campaign_id             text,
    contact_id              text,
    number                  text,
    attempt_number          integer,
    max_attempts            integer,
    list_version            integer,
    decision                text check (decision in ('allowed', 'refused')),
    refusal                 text,
    on_do_not_call          boolean,
    do_not_call_version     text,
    within_calling_window   boolean,
    local_time              text,         -- customer-local time of the check, as recorded
    checked_at              timestamptz,  -- when the check (or the gateway's refusal) happened
    requested_by            text,         -- gateway rows: dialer, integrator or agent_softphone
    requester               text,         -- gateway rows: extension, client id or `dialer`
    call_id                 text,
    dialled_at              timestamptz,
    dial_outcome            text,         -- busy, no_answer, failed, machine or answered
    sip_code                integer,
    dial_completed_at       timestamptz,
    connected_at            timestamptz,
    abandoned_at            timestamptz,
    outcome                 text,         -- compliance_abandoned, connected or dial_outcome
    outcome_at              timestamptz,
    primary key (tenant, ledger_id)
);
create index compliance_ledger_by_check on compliance_ledger (tenant, checked_at, ledger_id);
create index compliance_ledger_by_campaign
    on compliance_ledger (tenant, campaign_id, checked_at, ledger_id);
create index compliance_ledger_by_call on compliance_ledger (tenant, call_id);

alter table compliance_ledger enable row level security;
alter table compliance_ledger force row level security;

do $$
declare
    service_role text := 'plateau_' || current_schema();
    reader_role  text := 'plateau_' || current_schema() || '_reader';
begin
    execute format(
        'create policy projector_writes on compliance_ledger to %I using (true) with check (true)',
        service_role
    );
    execute format(
        'create policy tenant_reads on compliance_ledger for select to %I '
        'using (tenant = current_setting(''plateau.tenant'', true))',
        reader_role
    );
    execute format('grant select on compliance_ledger to %I', reader_role);
end
$$;
