-- What each campaign's predictive pacing has learned (answer probability, durations, the
-- abandonment ledger of the rolling 30 days), written in the transaction of the facts it
-- learned from, so a restarted dialer paces as before instead of starting cold.
create table pacing_measurements (
    tenant          text not null,
    campaign_id     text not null,
    measurements    jsonb not null,     -- pacing_measurements.snapshot()
    updated_at      timestamptz not null,
    primary key (tenant, campaign_id)
);
