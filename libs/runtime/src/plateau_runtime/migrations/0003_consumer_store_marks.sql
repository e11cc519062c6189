-- How far into each source event store a consumer's effects go: the highest store position
-- it applied and that event's chain hash (DESIGN §3: reports say up to which position and
-- chain head they were computed). Written in the same transaction as the effects, from the
-- relay's `event-store`, `store-position` and `chain-hash` message headers.
create table consumer_store_marks (
    consumer    text not null,
    store       text not null,
    position    bigint not null,
    chain_hash  text not null,
    applied_at  timestamptz not null default now(),
    primary key (consumer, store)
);
