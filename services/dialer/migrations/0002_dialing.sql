-- The dialer's working state for dialling, each row written in the transaction that records
-- the events it follows from (so the tables and the event store never disagree).

-- Campaigns and their state now (the pacing loop's list of what to dial for).
create table campaign_status (
    tenant          text not null,
    campaign_id     text not null,
    status          text not null,
    settings        jsonb not null,     -- campaign.created's data
    list_version    integer not null,
    primary key (tenant, campaign_id)
);

-- Each contact's dials: how many, the earliest start of the next, the one in flight, or why
-- it is done.
create table dial_plans (
    tenant          text not null,
    contact_id      text not null,
    campaign_id     text not null,
    number          text not null,
    attempts        integer not null default 0,
    not_before      timestamptz,
    in_flight       text,
    done            text,
    primary key (tenant, contact_id)
);
create index dial_plans_due on dial_plans (tenant, campaign_id, not_before)
    where done is null and in_flight is null;

-- Every dial handed to the gateway, and what became of it.
create table dial_attempts (
    attempt_id      text primary key,
    tenant          text not null,
    campaign_id     text not null,
    contact_id      text not null,
    number          text not null,
    started_at      timestamptz not null,
    call_id         text,                -- the gateway's, once Originate answered
    sent            boolean not null default false,
    result          text
);
create index dial_attempts_in_flight on dial_attempts (tenant, campaign_id) where result is null;
create index dial_attempts_by_call on dial_attempts (call_id);

-- The agents as the acd's events describe them, and the skills each queue requires: the
-- pacing's view of the floor.
create table floor_agents (
    tenant          text not null,
    agent_id        text not null,
    state           text not null,
    since           timestamptz not null,
    skills          text[] not null default '{}',
    primary key (tenant, agent_id)
);
create table queue_skills (
    tenant          text not null,
    queue_id        text not null,
    required        text[] not null,
    primary key (tenant, queue_id)
);
