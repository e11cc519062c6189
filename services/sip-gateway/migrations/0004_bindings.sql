-- Every live registration binding of every replica: a softphone registers on one replica
-- (the dispatcher hashes its Call-ID) and may be rung by the replica that holds the call.
-- Each replica writes its own rows through when its registrar changes and mirrors the
-- others' in memory (a full load at start, NOTIFY on each change, a periodic resync).
-- ``binding`` is the whole domain Binding as JSON, so a field added to it travels as is.
create table bindings (
    replica     text not null,
    aor         text not null,
    contact     text not null,
    binding     jsonb not null,
    expires_at  double precision not null,
    primary key (replica, aor, contact)
);
create index bindings_by_aor on bindings (aor);
