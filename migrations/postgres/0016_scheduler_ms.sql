-- The tree-stable timer counts from the millisecond a change arrived: in
-- whole seconds a 1 s timer fired up to a second early. Rows stored before
-- keep their seconds (read as seconds * 1000).
ALTER TABLE scheduler_changes ADD COLUMN received_ms BIGINT;
