-- Calls left open by a crash are found at start as streams with a call.offered or
-- call.originated and no call.ended: this index keeps that off a scan of the whole history.
create index if not exists events_by_type on events (type, stream);
