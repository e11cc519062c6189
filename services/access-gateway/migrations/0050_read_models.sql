-- The access gateway reads the stats projector's read models as the projector's reader role
-- (row-level security per tenant, SELECT only): its service role is granted that role and
-- switches to it (`set local role`) in each read transaction.
--
-- The stats projector's migrations run before the gateway's (`plateau migrate` follows the
-- services' order), so the reader role normally exists already; it is created here when it
-- does not, with the same attributes, so the order never makes this migration fail.
do $$
declare
    reader_role  text := 'plateau_stats_projector_reader';
    service_role text := 'plateau_' || current_schema();
begin
    if not exists (select 1 from pg_roles where rolname = reader_role) then
        execute format('create role %I nologin noinherit', reader_role);
    end if;
    execute format('grant %I to %I', reader_role, service_role);
end
$$;
