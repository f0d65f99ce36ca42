-- Changes the poller made (property source = "poller"), found without a
-- scan: the changes page lists them so an operator sees lost deliveries,
-- and a late delivery of a polled commit is recognised.
CREATE INDEX change_properties_source ON change_properties (change_id) WHERE name = 'source';
