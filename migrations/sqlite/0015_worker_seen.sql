-- When each worker's last connection ended, so `cascade status` and the
-- pages can say how long a builder has been without one.
ALTER TABLE workers ADD COLUMN disconnected_at BIGINT;
