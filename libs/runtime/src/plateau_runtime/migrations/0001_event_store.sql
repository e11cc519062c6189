-- The service's event store: the source of truth. Append-only for the service role
-- (the migration runner grants it SELECT and INSERT only on this table).
create table events (
    position        bigint primary key,          -- gap-free, commit order (appends serialised)
    event_id        uuid not null unique,
    stream          text not null,
    stream_version  integer not null check (stream_version >= 1),
    type            text not null,
    schema_version  integer not null check (schema_version >= 1),
    tenant          text not null,
    occurred_at     timestamptz not null,
    recorded_at     timestamptz not null,
    correlation_id  uuid,
    causation_id    uuid,
    traceparent     text,
    data            jsonb not null,
    prev_hash       bytea not null,
    hash            bytea not null,
    constraint events_stream_version_unique unique (stream, stream_version)
);

-- Where each outbox relay has published up to (at-least-once: it resumes from here).
create table relay_positions (
    relay       text primary key,
    position    bigint not null,
    updated_at  timestamptz not null default now()
);

-- Idempotent consumers: the last stream version each consumer applied, written in the same
-- transaction as the consumer's effect.
create table consumer_checkpoints (
    consumer    text not null,
    stream      text not null,
    version     integer not null,
    primary key (consumer, stream)
);
