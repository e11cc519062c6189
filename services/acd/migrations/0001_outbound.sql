-- What the acd needs to know of the dialer's campaigns and dials to route a live outbound
-- answer, kept from the facts it consumes (it never reads the dialer's tables):
-- each campaign's queue, from `campaign.created` and the campaign's later state changes ...
create table campaigns (
    tenant      text not null,
    campaign_id text not null,
    name        text not null,
    queue_id    text not null,              -- the queue live answers are offered to
    state       text not null,              -- created, running, paused, stopped
    updated_at  timestamptz not null,
    primary key (tenant, campaign_id)
);

-- ... and each outbound call from its `call.originated` until its `call.ended` (the answer,
-- `call.dial_completed`, does not say which contact or agent it is for). Written in the
-- transaction of the consumer's checkpoint, so a restart forgets no call in progress.
create table outbound_calls (
    tenant        text not null,
    call_id       text not null,
    campaign_id   text not null,
    contact_id    text not null,
    attempt_id    text not null,
    number        text not null,
    agent_id      text,                     -- preview: the agent the originate named
    requested_by  text not null,            -- dialer, integrator, agent_softphone
    originated_at timestamptz not null,
    primary key (tenant, call_id)
);
