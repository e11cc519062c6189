-- The access gateway's accounts and credentials. Secrets are never stored as given:
-- passwords as argon2id hashes, session and API tokens and recovery codes as SHA-256
-- digests of high-entropy random values. The audit trail lives in `events` (the chain).

-- A user of one tenant; usernames are unique across the installation (a login names no
-- tenant), compared without case.
create table users (
    user_id             text primary key,
    tenant              text not null,
    username            text not null,
    role                text not null,
    queue_ids           text[] not null default '{}',
    campaign_ids        text[] not null default '{}',
    password_hash       text not null,
    password_changed_at timestamptz not null,
    -- TOTP: the base32 seed once enrolment starts; confirmed once a code was checked.
    totp_secret         text,
    totp_confirmed      boolean not null default false,
    -- Last time step whose code was accepted: a code of that step or earlier is a replay.
    totp_last_step      bigint not null default 0,
    failed_logins       integer not null default 0,
    last_failure_at     timestamptz,
    locked_until        timestamptz,
    created_at          timestamptz not null
);
create unique index users_username_key on users (lower(username));
create index users_tenant on users (tenant);

create table recovery_codes (
    user_id     text not null references users on delete cascade,
    code_hash   bytea not null,
    used_at     timestamptz,
    primary key (user_id, code_hash)
);

-- Failed logins per source address, for the per-source lockout.
create table source_failures (
    source          text primary key,
    failed_logins   integer not null,
    last_failure_at timestamptz not null,
    locked_until    timestamptz
);

-- Per-tenant account policy; no row: passwords never expire.
create table tenant_policies (
    tenant                  text primary key,
    password_max_age_days   integer check (password_max_age_days > 0)
);

-- A login session. `stage` is how far the login got: a session is usable for reads only
-- when `active`; before that it may only finish its second factor or change an expired
-- password.
create table sessions (
    session_id      text primary key,
    token_hash      bytea not null unique,
    csrf_token      text not null,
    user_id         text not null references users on delete cascade,
    tenant          text not null,
    stage           text not null check (stage in
                        ('enrol_totp', 'totp', 'change_password', 'active')),
    created_at      timestamptz not null,
    last_seen_at    timestamptz not null,
    expires_at      timestamptz not null,
    locked          boolean not null default false,
    ended_at        timestamptz
);
create index sessions_user on sessions (user_id) where ended_at is null;

-- Read-only API tokens for BI tools.
create table api_tokens (
    token_id    text primary key,
    token_hash  bytea not null unique,
    user_id     text not null references users on delete cascade,
    tenant      text not null,
    name        text not null,
    created_by  text not null,
    created_at  timestamptz not null,
    expires_at  timestamptz not null,
    revoked_at  timestamptz
);
create index api_tokens_user on api_tokens (user_id);
