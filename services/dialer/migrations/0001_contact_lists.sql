-- The dialer's working copy of its own facts that are too large to fold in memory: the
-- contacts of each campaign's current list (with what the client told about each customer,
-- for the agent's screen pop), written in the same transaction as the events that allow or
-- withdraw them, so the table and the event store never disagree.
create table contacts (
    tenant          text not null,
    campaign_id     text not null,
    number          text not null,          -- E.164
    contact_id      text not null,
    list_version    integer not null,       -- the import that last listed the number
    allowed         boolean not null,
    line            integer not null,       -- where it was in that file
    name            text,
    reference       text,
    attributes      jsonb not null default '{}',
    primary key (tenant, campaign_id, number)
);
create unique index contacts_by_id on contacts (tenant, contact_id);

-- Numbers the tenant's customers asked never to be called: scrubbed from every import.
create table do_not_call (
    tenant      text not null,
    number      text not null,              -- E.164
    added_at    timestamptz not null default now(),
    source      text not null,
    primary key (tenant, number)
);
