-- Attempts ended by something other than the job itself (a worker that
-- died, a process shut down): not counted as attempts, but counted, so a
-- job that brings its process down every time still ends.
ALTER TABLE jobs ADD COLUMN interruptions BIGINT NOT NULL DEFAULT 0;
