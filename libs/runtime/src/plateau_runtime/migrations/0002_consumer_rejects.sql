-- Messages a consumer could not read as an event envelope. They are kept, byte for byte,
-- so nothing read from the bus is lost silently; the consumer moves on past them.
create table consumer_rejects (
    consumer        text not null,
    topic           text not null,
    partition       integer not null,
    message_offset  bigint not null,
    message_key     bytea,
    message_value   bytea,
    headers         jsonb not null default '[]',
    error           text not null,
    rejected_at     timestamptz not null default now(),
    primary key (consumer, topic, partition, message_offset)
);
