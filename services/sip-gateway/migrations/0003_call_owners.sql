-- Which replica holds each call (several gateway replicas): a replica that gets a
-- CallControl request for a call it does not hold looks the owner up here and forwards the
-- request to the owner's gRPC address. Written when a call opens, read only on a local
-- miss and at start (a restarting replica closes only the calls it held).
-- ``attempt`` is an Originate's attempt id (or request id): unique per tenant, it is how a
-- retried Originate that lands on another replica finds the call already dialled.
create table call_owners (
    call_id     text primary key,
    tenant      text not null,
    replica     text not null,
    address     text not null,
    attempt     text,
    opened_at   timestamptz not null default now()
);
create unique index call_owners_attempt on call_owners (tenant, attempt) where attempt is not null;
create index call_owners_by_replica on call_owners (replica);
create index call_owners_by_age on call_owners (opened_at);
