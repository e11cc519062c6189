-- The do-not-call list is now kept by the dialer's own commands (dnc.number_added /
-- dnc.number_removed), each row written in the transaction of its event; the reason given
-- when a number was added travels with it. Rows inserted by hand before keep a null reason.
alter table do_not_call add column reason text;
