-- Where a change came from when it was not a delivery: 'poller' for the
-- pushes the poller found (also shown as the property source = "poller").
-- Kept on the row so that the check every push makes (a late delivery of a
-- polled commit adds nothing) reads one index, whatever the history.
ALTER TABLE changes ADD COLUMN source TEXT;
-- By revision and branch at once: no plan walks a branch's whole history.
DROP INDEX changes_revision;
CREATE INDEX changes_revision ON changes (revision, branch);
-- The changes page's list of what the poller found.
CREATE INDEX changes_polled ON changes (id) WHERE source IS NOT NULL;
