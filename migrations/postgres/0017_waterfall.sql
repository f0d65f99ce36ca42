-- The waterfall reads each builder's builds by start time within a window.
CREATE INDEX builds_builder_started_at ON builds (builder_id, started_at);
