-- The dialer's allow-list facts (contact.allowed / contact.withdrawn, campaign lifecycle) as
-- the gateway received them: the gateway's own copy, reloaded into memory at start, so a
-- restart needs neither the broker's history nor a new consumer group.
create table allowlist_facts (
    stream          text not null,
    stream_version  integer not null,
    tenant          text not null,
    envelope        jsonb not null,
    primary key (tenant, stream, stream_version)
);
