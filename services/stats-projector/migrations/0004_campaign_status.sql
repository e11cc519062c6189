-- Each campaign now (live supervision: status, progress through its contact list, dial
-- level). Every value is kept with the time of the fact that set it and only replaced by
-- a later one, because facts of a campaign come from many streams (the campaign's and
-- each contact's) that the bus does not order with one another.
create table campaign_status (
    tenant              text not null,
    campaign_id         text not null,
    name                text,
    status              text,
    status_at           timestamptz,
    list_version        integer,
    contacts_in_list    integer,          -- contacts the current list version made dialable
    contacts_dialled    integer not null default 0,  -- contacts dialled at least once
    dial_level          double precision, -- dials per free agent of the latest paced dial
    dial_level_at       timestamptz,
    primary key (tenant, campaign_id)
);

-- The contacts of each campaign dialled at least once (a set, so replays count once).
create table campaign_dialled_contacts (
    tenant          text not null,
    campaign_id     text not null,
    contact_id      text not null,
    primary key (tenant, campaign_id, contact_id)
);

-- A campaign fact: each value is replaced only by a later one; a dial adds its contact.
create function project_campaign(
    p_tenant text, p_campaign_id text, p_at timestamptz, p_status text, p_name text,
    p_list_version integer, p_contacts integer, p_contact_id text, p_dial_level double precision,
    p_channel text, p_notification text
) returns void language plpgsql as $$
begin
    insert into campaign_status as c (tenant, campaign_id) values (p_tenant, p_campaign_id)
    on conflict do nothing;
    if p_status is not null then
        update campaign_status set status = p_status, status_at = p_at
        where tenant = p_tenant and campaign_id = p_campaign_id
          and (status_at is null or status_at <= p_at);
    end if;
    if p_name is not null then
        update campaign_status set name = p_name
        where tenant = p_tenant and campaign_id = p_campaign_id;
    end if;
    if p_list_version is not null then
        update campaign_status set list_version = p_list_version, contacts_in_list = p_contacts
        where tenant = p_tenant and campaign_id = p_campaign_id
          and (list_version is null or list_version <= p_list_version);
    end if;
    if p_contact_id is not null then
        insert into campaign_dialled_contacts values (p_tenant, p_campaign_id, p_contact_id)
        on conflict do nothing;
        if found then
            update campaign_status set contacts_dialled = contacts_dialled + 1
            where tenant = p_tenant and campaign_id = p_campaign_id;
        end if;
    end if;
    if p_dial_level is not null then
        -- The latest paced dial wins; at the same instant, the higher level (a fixed rule,
        -- so the order facts arrive in does not matter).
        update campaign_status set dial_level = p_dial_level, dial_level_at = p_at
        where tenant = p_tenant and campaign_id = p_campaign_id
          and (dial_level_at is null or (dial_level_at, dial_level) < (p_at, p_dial_level));
    end if;
    if p_channel is not null then
        perform pg_notify(p_channel, p_notification);
    end if;
end
$$;

alter table campaign_status enable row level security;
alter table campaign_status force row level security;
alter table campaign_dialled_contacts enable row level security;
alter table campaign_dialled_contacts force row level security;

do $$
declare
    service_role text := 'plateau_' || current_schema();
    reader_role  text := 'plateau_' || current_schema() || '_reader';
    read_model   text;
begin
    foreach read_model in array array['campaign_status', 'campaign_dialled_contacts'] loop
        execute format(
            'create policy projector_writes on %I to %I using (true) with check (true)',
            read_model, service_role
        );
        execute format(
            'create policy tenant_reads on %I for select to %I '
            'using (tenant = current_setting(''plateau.tenant'', true))',
            read_model, reader_role
        );
        execute format('grant select on %I to %I', read_model, reader_role);
    end loop;
    execute format(
        'revoke execute on function project_campaign(text, text, timestamptz, text, text, '
        'integer, integer, text, double precision, text, text) from public'
    );
    execute format(
        'grant execute on function project_campaign(text, text, timestamptz, text, text, '
        'integer, integer, text, double precision, text, text) to %I', service_role
    );
end
$$;
