-- A campaign may require skills of its own, on top of its queue's (`campaign.created`'s
-- `required_skills`): its live answers go only to agents who have them all.
alter table campaigns add column required_skills text[] not null default '{}';
